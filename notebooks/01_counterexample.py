# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The counterexample: canonical runs and their floors
#
# A state-independent velocity field $V(\lambda)$ is trained to make the continuity
# residual vanish for every state of $S_v$ at once (DESIGN §4). The figure of merit is the
# held-out $L(V)/L(0)$: the fraction of the evolution of the distributions that the field
# leaves unexplained. The noninteracting control has an exact field (Theorem 1), so its
# loss must go to zero; for Heisenberg the paper's counterexample (App. C) says it cannot.
# The least-squares *floor* (`lhvjax floor`) is the global minimum of the same convex
# loss over a finite basis of fields: a network above it has an optimisation problem, one
# at it has found what the function class allows.
#
# Data: `experiments/results/search.json` (from `make results`, three seeds per
# experiment) and `floor.json` (from `experiments/floor_table.py`) when present;
# otherwise a tiny training and a tiny floor fit are run here (numbers then only
# illustrate: the tiny runs are far from converged).

# %%
import json
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lhvjax import config, floor, landscape, train

SMALL = os.environ.get("LHVJAX_SMALL", "1") == "1"
ROOT = Path("..") if Path.cwd().name == "notebooks" else Path(".")  # relative: tidy outputs
EXPERIMENTS = Path(os.environ.get("LHVJAX_EXPERIMENTS", ROOT / "experiments"))
RESULTS = EXPERIMENTS / "results"
T0 = time.perf_counter()

# %% [markdown]
# ## Load the results, or make tiny ones

# %%
TINY = landscape.tiny_overrides(SMALL)  # only where a canonical run is missing


def tiny_search(names=("free_svd", "heisenberg_svd")):
    rows = []
    for name in names:
        s = train.train(config.load(EXPERIMENTS / f"{name}.toml", TINY), None, progress=False)
        s = s.summary
        rows.append(
            {
                "name": name,
                "gauge": s["config"]["physics"]["gauge"],
                "hamiltonian": s["config"]["physics"]["hamiltonian"],
                "field": s["config"]["field"]["kind"],
                "width": s["config"]["field"]["width"],
                "steps": s["steps"],
                "seeds": [0],
                "normalized_loss_mean": s["normalized_loss"],
                "normalized_loss_stderr": s["normalized_loss_stderr"],
                "per_seed": [s["normalized_loss"]],
            }
        )
    return rows


def tiny_floors():
    out = []
    for name, basis, K in (("heisenberg_svd", "invariant", 2), ("free_svd", "harmonic", 1)):
        cfg = config.load(EXPERIMENTS / f"{name}.toml", TINY)
        r = floor.run_floor(cfg, K, batches=2, basis=basis, train_eval=False)
        out.append({k: v for k, v in r.items() if not k.startswith("_")})
    return out


if (RESULTS / "search.json").exists():
    search = json.loads((RESULTS / "search.json").read_text())
    source = f"{RESULTS / 'search.json'}"
else:
    search = tiny_search()
    source = "tiny runs trained now (NOT converged: an illustration only)"
if (RESULTS / "floor.json").exists():
    floors = json.loads((RESULTS / "floor.json").read_text())
    floor_source = f"{RESULTS / 'floor.json'}"
else:
    floors = tiny_floors()
    floor_source = "tiny floor fits made now"
print("runs:  ", source)
print("floors:", floor_source)

# %% [markdown]
# ## The floors: the best any field of a basis can do (held-out)

# %%
print(f"{'hamiltonian':15s}{'gauge':8s}{'basis':10s}{'K':>3s}{'size':>6s}   held-out L/L0")
for r in floors:
    print(
        f"{r['hamiltonian']:15s}{r['gauge']:8s}{r['basis']:10s}{r['degree']:3d}"
        f"{r['basis_size']:6d}   {r['normalized_loss']:.4g} ± {r['normalized_loss_stderr']:.2g}"
    )


def best_floor(hamiltonian, gauge):
    """The state-independent floor for (H, gauge): the rotation-invariant basis of the
    largest degree where fitted (Heisenberg: the same population floor as the harmonic
    basis, without its overfitting), else the largest harmonic basis."""
    rows = [r for r in floors if r["hamiltonian"] == hamiltonian and r["gauge"] == gauge]
    rows = [r for r in rows if r.get("time_degree") is None]
    return max(rows, key=lambda r: (r["basis"] == "invariant", r["degree"])) if rows else None


# %% [markdown]
# ## The neural runs against the floor
#
# `gap / s.e.`: (network − floor) in units of the two held-out standard errors combined,
# for the state-independent runs (the floor is a state-independent bound).

# %%
print(f"{'experiment':36s}{'L(V)/L(0) (mean ± s.e., seeds)':>34s}{'floor':>10s}{'gap/s.e.':>10s}")
for r in search:
    f = best_floor(r["hamiltonian"], r["gauge"]) if r["field"] == "state_independent" else None
    se = r.get("within_run_stderr", r["normalized_loss_stderr"])
    n = len(r["seeds"])
    cell = f"{r['normalized_loss_mean']:.4g} ± {r['normalized_loss_stderr']:.2g} (n={n})"
    line = f"{r['name']:36s}{cell:>34s}"
    if f is not None:
        gap = (r["normalized_loss_mean"] - f["normalized_loss"]) / np.hypot(
            se, f["normalized_loss_stderr"]
        )
        line += f"{f['normalized_loss']:10.4g}{gap:10.1f}"
    print(line)

# %%
fig, ax = plt.subplots(figsize=(8, 0.35 * len(search) + 1.5))
y = np.arange(len(search))
colors = ["tab:green" if r["hamiltonian"] == "noninteracting" else "tab:red" for r in search]
ax.barh(
    y,
    [max(r["normalized_loss_mean"], 1e-7) for r in search],
    xerr=[r["normalized_loss_stderr"] for r in search],
    color=colors,
    alpha=0.75,
    capsize=3,
)
for yi, r in zip(y, search, strict=True):
    ax.plot(r["per_seed"], [yi] * len(r["per_seed"]), "k.", ms=4)
    f = best_floor(r["hamiltonian"], r["gauge"]) if r["field"] == "state_independent" else None
    if f is not None and f["normalized_loss"] > 1e-6:
        ax.plot([f["normalized_loss"]] * 2, [yi - 0.4, yi + 0.4], color="k", lw=2)
ax.set_yticks(y, [r["name"] for r in search], fontsize=8)
ax.invert_yaxis()
ax.set_xscale("log")
ax.axvline(1.0, color="grey", lw=0.8, ls="--")
ax.set_xlabel("held-out L(V) / L(0)   (dots: seeds; black bars: least-squares floor)")
ax.set_title("noninteracting control (green) reaches ~0; Heisenberg (red) stops at the floor")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Training curves of the canonical runs (seed 0), where present

# %%
curves = ["free_svd", "heisenberg_svd", "heisenberg_linear"]
present = [n for n in curves if (EXPERIMENTS / "runs" / n / "seed_0" / "metrics.jsonl").exists()]
if present:
    fig, ax = plt.subplots(figsize=(7, 4))
    for n in present:
        path = EXPERIMENTS / "runs" / n / "seed_0" / "metrics.jsonl"
        history = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        train.plot_history(history, path, title=n, ax=ax)
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()
else:
    print("no canonical runs under", EXPERIMENTS / "runs", "(make results writes them)")

# %%
print(f"notebook time: {time.perf_counter() - T0:.0f} s")
