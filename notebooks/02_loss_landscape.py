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
# # 02 · Loss landscape: noninteracting against Heisenberg
#
# The Heisenberg runs stop at $L(V)/L(0) \approx 0.92$ (svd gauge) and $0.56$ (linear
# gauge) while the noninteracting control goes to ~0 (notebook 01). Is the Heisenberg
# plateau
#
# * a **wide basin** — one minimum, reached from every seed, whose bottom is the best any
#   state-independent field can do;
# * a **barrier** — the optimiser is stuck in one of several basins separated by ridges;
# * or **noise** — the Monte Carlo noise of a training batch hides a remaining descent?
#
# Tools (`lhvjax.landscape`, Li et al. 2018): 1-D and 2-D slices along filter-normalised
# random directions, the straight line between two seeds in parameter space *and* in
# function space, top Hessian eigenvalues by Lanczos (Hessian-vector products), the
# resampling noise of one training batch, and the loss split by state and by region.
# The residual is affine in $V$, so $L$ is a convex quadratic in function space: along
# $V_t = (1-t)V_a + tV_b$ there is never a barrier, and
# $E[(r_a - r_b)^2]/L(0)$ measures how different two solutions are.
#
# Fields: the canonical runs (`experiments/runs/NAME/seed_{0,1}`, from `make results`)
# when present, else small fields trained here (then not converged: the numbers only
# exercise the tools).

# %%
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from lhvjax import config, floor, landscape

jax.config.update("jax_enable_x64", True)  # the analysis in float64
SMALL = os.environ.get("LHVJAX_SMALL", "1") == "1"
ROOT = Path("..") if Path.cwd().name == "notebooks" else Path(".")  # relative: tidy outputs
EXPERIMENTS = Path(os.environ.get("LHVJAX_EXPERIMENTS", ROOT / "experiments"))
T0 = time.perf_counter()

TINY = landscape.tiny_overrides(SMALL)  # only where a canonical run is missing
NAMES = ["free_svd", "heisenberg_svd", "heisenberg_linear"]
canonical = all((EXPERIMENTS / "runs" / n / "seed_1" / "summary.json").exists() for n in NAMES)
if SMALL and not canonical:
    NAMES = NAMES[:2]  # training here costs time: the paper's gauge only
SURVEY = (
    dict(states=16, points=128, hessian_steps=20, noise_repeats=8)
    if SMALL
    else dict(states=64, points=512, hessian_steps=40, noise_repeats=32, grid=15)
)

# %% [markdown]
# ## Two solutions per problem, a reference field, and the survey
#
# For Heisenberg the reference is the least-squares optimum over the rotation-invariant
# basis (`floor.InvariantBasis`, degree 2: 4 fields), the global minimum of the convex
# loss within that basis.

# %%
floors = {}
if (EXPERIMENTS / "results" / "floor.json").exists():
    for r in json.loads((EXPERIMENTS / "results" / "floor.json").read_text()):
        if r["basis"] == "invariant" and r.get("time_degree") is None:
            key = (r["hamiltonian"], r["gauge"])
            if key not in floors or r["degree"] > floors[key]["degree"]:
                floors[key] = r

surveys, info = {}, {}
for name in NAMES:
    t = time.perf_counter()
    a, b = (landscape.load_or_train(EXPERIMENTS, name, s, TINY) for s in (0, 1))
    pa, pb = (landscape.cast(x.params, jnp.float64) for x in (a, b))
    reference = None
    key = (a.cfg.physics.hamiltonian, a.cfg.physics.gauge)
    if key[0] == "heisenberg":
        fit_cfg = config.load(EXPERIMENTS / f"{name}.toml", ["train.states=32", "train.points=256"])
        fit = floor.run_floor(
            fit_cfg, 2, batches=2 if SMALL else 8, basis="invariant", train_eval=False
        )
        basis = floor.make_basis("invariant", 2)
        reference = (floor.basis_field(basis, fit["_solution"].c), {})
        floors.setdefault(key, fit)
    surveys[name] = landscape.survey(
        a.problem,
        a.field,
        pa,
        pb,
        key=jax.random.key(2024),
        reference=reference,
        noise_states=a.cfg.train.states,
        noise_points=a.cfg.train.points,
        **SURVEY,
    )
    info[name] = {"a": a, "b": b}
    print(f"{name}: {a.source}; survey {time.perf_counter() - t:.0f} s")

# %% [markdown]
# ## The numbers

# %%
print(f"{'':22s}" + "".join(f"{n:>20s}" for n in NAMES))


def row(label, values, fmt="{:.4g}"):
    print(f"{label:22s}" + "".join(f"{fmt.format(v):>20s}" for v in values))


S = [surveys[n] for n in NAMES]
row("held-out L/L0 seed 0", [info[n]["a"].summary["normalized_loss"] for n in NAMES])
row("held-out L/L0 seed 1", [info[n]["b"].summary["normalized_loss"] for n in NAMES])
row("held-out s.e.", [info[n]["a"].summary["normalized_loss_stderr"] for n in NAMES], "{:.2g}")
row(
    "floor (held-out)",
    [
        floors.get(
            (info[n]["a"].cfg.physics.hamiltonian, info[n]["a"].cfg.physics.gauge),
            {"normalized_loss": np.nan},
        )["normalized_loss"]
        for n in NAMES
    ],
)
row("analysis-grid L/L0", [s["loss"] for s in S])
row("train-batch noise σ", [s["noise_std"] for s in S], "{:.2g}")
row("param-line barrier", [s["barrier"] for s in S])
row("seed distance", [s["seed_distance"] for s in S], "{:.3g}")
row("  ... / L", [s["seed_distance"] / s["loss"] for s in S], "{:.3g}")
row("distance to floor opt", [s.get("reference_distance", np.nan) for s in S], "{:.3g}")
row("floor opt on grid", [s.get("reference_loss", np.nan) for s in S])
for i in range(3):
    row(f"Hessian λ{i + 1}", [s["hessian_top"][i] for s in S], "{:.4g}")
    row("  Lanczos residual", [s["hessian_residuals"][i] for s in S], "{:.1e}")
row("lowest Ritz value", [s["hessian_min_ritz"] for s in S], "{:.3g}")
widths = {
    n: [landscape.basin_width(s["alphas"], f, S[1]["noise_std"]) for f in s["slice_1d"]]
    for n, s in zip(NAMES, S, strict=True)
}
row("basin width at σ_H", [np.mean(widths[n]) for n in NAMES], "{:.3f}")
row("parameters", [s["n_params"] for s in S], "{:d}")

# %% [markdown]
# ## 1-D and 2-D slices
#
# $\alpha$ is the step along a filter-normalised direction: $\alpha = 0.1$ moves every
# unit's weights by 10 % of their own norm. Right: the rise above the centre, with the
# noise σ of one training batch of each Heisenberg run (dotted): a rise below it is
# invisible to a training step.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for i, (n, s) in enumerate(surveys.items()):
    for j, f in enumerate(s["slice_1d"]):
        kw = dict(label=n if j == 0 else None, ls="-" if j == 0 else "--", color=f"C{i}")
        axes[0].semilogy(s["alphas"], f, **kw)
        axes[1].plot(s["alphas"], f - s["loss"], **kw)
    if n.startswith("heisenberg"):
        axes[1].axhline(s["noise_std"], color=f"C{i}", ls=":", lw=1)
axes[0].set_ylabel("L / L(0) on the analysis grid")
axes[1].set_ylabel("L(α) − L(0 step)")
axes[1].set_ylim(-0.02, 0.3)
for ax in axes:
    ax.set_xlabel("α (filter-normalised)")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()

fig, axes = plt.subplots(1, len(S), figsize=(4 * len(S), 3.5))
for ax, n, s in zip(np.atleast_1d(axes), NAMES, S, strict=True):
    g = s["grid"]
    c = ax.contourf(g, g, np.log10(s["slice_2d"].T), levels=20, cmap="viridis")
    ax.plot([0], [0], "r+", ms=10)
    ax.set_title(n, fontsize=9)
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    fig.colorbar(c, ax=ax, label="log10 L/L(0)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The line between two seeds: parameter space against function space

# %%
fig, axes = plt.subplots(1, len(S), figsize=(4 * len(S), 3.3))
for ax, n, s in zip(np.atleast_1d(axes), NAMES, S, strict=True):
    ax.plot(s["ts"], s["line"], "o-", ms=3, label="(1−t)θ_a + tθ_b")
    ax.plot(s["ts"], s["function_line"], "s--", ms=3, label="(1−t)V_a + tV_b")
    ax.axvspan(0, 1, color="grey", alpha=0.08)
    ax.set_yscale("log")
    ax.set_title(f"{n}: barrier {s['barrier']:.3g}", fontsize=9)
    ax.set_xlabel("t")
    ax.grid(alpha=0.3)
np.atleast_1d(axes)[0].set_ylabel("L / L(0)")
np.atleast_1d(axes)[0].legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Curvature, and where the loss lives

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for i, (n, s) in enumerate(surveys.items()):
    axes[0].plot(np.arange(1, len(s["hessian_top"]) + 1), s["hessian_top"], "o-", label=n)
    r = s["by_region"]
    axes[1].plot(r["centers"], r["ratio"], "o-", label=n)
    if n != "free_svd":
        st = s["by_state"]
        axes[2].scatter(
            st["singular_gap"],
            st["ratio"],
            s=2000 * st["weight"],
            alpha=0.5,
            label=n,
            color=f"C{i}",
        )
axes[0].set_xlabel("k")
axes[0].set_ylabel("Hessian eigenvalue λ_k")
axes[0].set_yscale("log")
axes[1].set_xlabel("l1 · l2 (bins of equal measure)")
axes[1].set_ylabel("L_bin(V) / L_bin(0)")
axes[1].set_yscale("log")
axes[2].set_xscale("log")
axes[2].tick_params(axis="x", labelsize=7)
axes[2].set_xlabel("smallest gap between singular values of T")
axes[2].set_ylabel("L_ρ(V) / L_ρ(0)  (size: weight in the pooled figure)")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Verdict, from the numbers above
#
# * **barrier?** compare the parameter-space barrier of Heisenberg with that of the
#   noninteracting control (which has an exact solution and no plateau), and look at the
#   function-space distance between the seeds relative to the loss;
# * **basin at the floor?** the held-out plateau against the least-squares floor and the
#   distance to the floor's optimum field;
# * **noise?** the remaining gap to the floor against the noise σ of one training batch.
#
# Thresholds used below (judgement calls, printed with the numbers they act on): two
# seeds are "the same function" if $E[(r_a-r_b)^2] < 0.1\,L$; a parameter-space barrier
# is "comparable to the control's" if at most 1.5 times it; the plateau is "at the floor"
# if the gap is below 3 standard errors or below σ.

# %%
free = surveys.get("free_svd")
for n in NAMES:
    if not n.startswith("heisenberg"):
        continue
    s, a = surveys[n], info[n]["a"]
    fl = floors[(a.cfg.physics.hamiltonian, a.cfg.physics.gauge)]
    held = np.mean([info[n][k].summary["normalized_loss"] for k in ("a", "b")])
    se = np.hypot(a.summary["normalized_loss_stderr"], fl["normalized_loss_stderr"])
    gap = held - fl["normalized_loss"]
    print(f"--- {n}")
    print(
        f"plateau {held:.4g} vs floor {fl['normalized_loss']:.4g}: gap {gap:+.3g} "
        f"({gap / se:+.1f} s.e.); noise of one training batch σ = {s['noise_std']:.3g}"
    )
    same_function = s["seed_distance"] / s["loss"] < 0.1
    print(
        f"seeds: E(r_a - r_b)^2 / L = {s['seed_distance'] / s['loss']:.3f} -> "
        + (
            "the same function (one basin in function space)"
            if same_function
            else "different functions"
        )
    )
    if free is not None:
        print(
            f"parameter-space barrier {s['barrier']:.3g} vs noninteracting control "
            f"{free['barrier']:.3g}: "
            + (
                "comparable to the control's: a property of the parametrisation"
                if s["barrier"] <= 1.5 * free["barrier"]
                else "larger than the control's"
            )
        )
    if "reference_distance" in s:
        print(f"distance to the floor optimum / L = {s['reference_distance'] / s['loss']:.3f}")
    at_floor = abs(gap) < max(3 * se, s["noise_std"])
    label = (
        "a basin at the floor (not a barrier); what is left is below the batch noise"
        if at_floor and same_function
        else "not at the floor: undertrained or stuck (see the numbers)"
    )
    print("=>", label)
print(f"\nnotebook time: {time.perf_counter() - T0:.0f} s")
