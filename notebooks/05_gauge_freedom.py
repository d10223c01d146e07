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
# # 05 · Gauge freedom: weak, Lagrangian and learned-gauge formulations
#
# The counterexample (notebook 01) fixes the distributions $p_\rho$ (the svd gauge). The
# Bell statistics only see the moments of $p_\rho$ whose degrees are odd or zero on each
# sphere; the rest is a gauge freedom. Three formulations relax the fixed gauge:
#
# * **weak**: ask $\frac{d}{dt}E_p[\phi] = E_p[V\cdot\nabla\phi]$ for test functions
#   $\phi = Y_A(l_1)Y_B(l_2)$ of degree $\le L$ — all of them, or the odd (visible) ones;
# * **Lagrangian**: move samples $\lambda_0 \sim p_{\rho_0}$ with $V$ and compare the
#   moved samples' odd moments and sign statistics with quantum mechanics at later times;
# * **learned gauge**: a state-dependent change of the free (invisible) moments, trained
#   together with $V$ in the strong form.
#
# The table and figure come from `experiments/gauge_freedom.py` when its results exist;
# the cells below look inside one Heisenberg run of each kind (the experiment's runs when
# present, else small runs trained here).

# %%
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from lhvjax import config, harmonics, lagrangian, landscape, maps, quantum, train
from lhvjax.weak import weak_residuals

jax.config.update("jax_enable_x64", True)
SMALL = os.environ.get("LHVJAX_SMALL", "1") == "1"
ROOT = Path("..") if Path.cwd().name == "notebooks" else Path(".")
EXPERIMENTS = Path(os.environ.get("LHVJAX_EXPERIMENTS", ROOT / "experiments"))
T0 = time.perf_counter()

# %% [markdown]
# ## The experiment's results

# %%
results = EXPERIMENTS / "results" / "gauge_freedom.md"
if results.exists():
    display(Markdown(results.read_text()))
else:
    print("experiments/results/gauge_freedom.md is missing: run experiments/gauge_freedom.py")

# %% [markdown]
# ## One run of each kind
#
# `run(form)` restores the experiment's seed-0 Heisenberg run of that formulation, or
# trains a small one now (a few hundred steps: far from converged, and labelled so).

# %%
FORMS = {
    "weak, full": ["physics.formulation=weak"],
    "Lagrangian": [
        "physics.formulation=lagrangian",
        "lagrangian.t_max=2.0",
        "lagrangian.steps=4",
        "train.states=8",
        "train.points=64",
        "eval.times=2",
        "eval.states=16",
        "eval.points=256",
    ],
    "learned gauge": ["physics.gauge=learned"],
}
SLUG = {"weak, full": "weak_full", "Lagrangian": "lagrangian", "learned gauge": "learned_gauge"}


def run(form):
    run_dir = EXPERIMENTS / "runs" / "gauge_freedom" / f"heisenberg_{SLUG[form]}_1000steps"
    run_dir = run_dir / "seed_0"
    if (run_dir / "summary.json").exists():
        cfg, problem, field, params = landscape.load_run(run_dir)
        return problem, field, params, json.loads((run_dir / "summary.json").read_text()), "run"
    tiny = landscape.tiny_overrides(SMALL)  # later overrides (FORMS) win
    if form == "Lagrangian":  # ~0.1 s a step on a laptop CPU
        tiny.append("train.steps=100" if SMALL else "train.steps=600")
    cfg = config.load(ROOT / "experiments" / "heisenberg_svd.toml", [*tiny, *FORMS[form]])
    result = train.train(cfg, None, progress=False)
    problem, field = config.build_problem(cfg), config.build_field(cfg)
    return problem, field, result.params, result.summary, f"trained now ({cfg.train.steps} steps)"


solutions = {form: run(form) for form in FORMS}
for form, (_, _, _, summary, source) in solutions.items():
    print(
        f"{form:14s} {source:26s} held-out L/L0 = {summary['normalized_loss']:.4g} "
        f"± {summary['normalized_loss_stderr']:.2g}"
    )

# %% [markdown]
# ## Weak form: which moments does the field fail to move?
#
# The weak residual $R_\phi$ for every $\phi = Y_A(l_1)Y_B(l_2)$ of degree $\le 3$, its
# square summed over the orders $m$ and averaged over held-out states, by the degrees
# $(\deg A, \deg B)$, against the same for $V = 0$. Cells with both degrees odd or zero
# are what the Bell statistics see.

# %%
problem, field, params, _, _ = solutions["weak, full"]
L = 3
batch = problem.formulation.sample(problem, jax.random.key(5), 1, 16 if SMALL else 64, 2048)
residuals = jax.jit(lambda p, b: weak_residuals(problem, field, p, b, L, "full", 8)[0])
R = residuals(params, batch)
# with V = 0 the flux vanishes and R_phi is the exact rate d/dt E_p[phi]: the per-moment L(0)
R0 = residuals(jax.tree.map(jnp.zeros_like, params), batch)
A, B = harmonics.pairs(L, "full")
deg = harmonics.degrees(L)


def by_degree(X):
    # unbiased squares over blocks, summed within each (deg A, deg B) cell
    from lhvjax.residual import block_square

    out = np.zeros((L + 1, L + 1))
    for i in range(L + 1):
        for j in range(L + 1):
            sel = (deg[A] == i) & (deg[B] == j)
            if sel.any():
                out[i, j] = float(jnp.mean(block_square(X[..., sel])))
    return out


zero = by_degree(R0)
ratio = by_degree(R) / np.where(zero > 0, zero, np.nan)
fig, ax = plt.subplots(figsize=(4.5, 3.8))
im = ax.imshow(ratio, origin="lower", cmap="magma", vmin=0)
for i in range(L + 1):
    for j in range(L + 1):
        if np.isfinite(ratio[i, j]):
            ax.text(j, i, f"{ratio[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
ax.set_xlabel("degree on sphere 2")
ax.set_ylabel("degree on sphere 1")
ax.set_title("weak residual / zero field, by degrees")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# ## Lagrangian form: samples moved by the learned field
#
# For one state, exact samples of the svd gauge are moved with the Lagrangian run's field
# over $[0, 2]$; their correlation $E[\mathrm{sign}(n_1\cdot l_1)\,\mathrm{sign}(n_2\cdot
# l_2)]$ (with its standard error) is compared with quantum mechanics, $n_1^T T(t) n_2$,
# and with samples that stay put.

# %%
problem, field, params, _, _ = solutions["Lagrangian"]
state = jax.tree.map(lambda x: x[0], quantum.random_states(jax.random.key(11), 1, 0.2))
n1 = n2 = jnp.array([0.0, 0.0, 1.0])
ts = jnp.linspace(0.0, 2.0, 9)[1:]
lam0 = problem.gauge.sample(jax.random.key(12), state, 4096 if SMALL else 32768)
moved = lagrangian.flow(field, params, lam0, ts, 2.0, 8)
dirs = jnp.stack([n1, n2])[None]
stat = jax.vmap(lambda lam: lagrangian.sign_values(lam, dirs)[:, 2])(moved)  # (t, n)
est, se = stat.mean(1), stat.std(1) / np.sqrt(stat.shape[1])
exact = [float(n1 @ quantum.evolve(problem.hamiltonian, state, t).T @ n2) for t in ts]
still = float(lagrangian.sign_values(lam0, dirs)[:, 2].mean())
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(ts, exact, "k-", label="quantum: n1^T T(t) n2")
ax.errorbar(ts, est, yerr=se, fmt="o", capsize=3, label="moved samples")
ax.axhline(still, color="C1", ls=":", label="samples at rest")
ax.set_xlabel("t")
ax.set_ylabel("E[sign sign]")
ax.legend(fontsize=8)
ax.set_title("zz correlation of one state under Heisenberg")
plt.show()

# %% [markdown]
# ## The learned gauge: what it changed
#
# The learned density minus the svd density for one state on the $l_1$ sphere with $l_2$
# at the north pole: a combination of even-degree harmonics only, so every Bell statistic
# is unchanged (checked below with an exact quadrature of the odd moments).

# %%
problem, field, params, summary, _ = solutions["learned gauge"]
gauge = problem.gauge.bind(params["gauge"])
GRID = maps.lonlat_grid(72, 36)
north = np.array([0.0, 0.0, 1.0])
change = maps.density_slice(gauge, state, GRID, north) - maps.density_slice(
    gauge.base, state, GRID, north
)
fig, ax = plt.subplots(figsize=(6, 3.4), subplot_kw={"projection": "mollweide"})
m = float(np.abs(change).max()) or 1.0
fig.colorbar(maps.mollweide(ax, GRID, change, cmap="RdBu_r", vmin=-m, vmax=m), ax=ax)
ax.set_title("w_learned - w_svd on l1 (l2 = north)", fontsize=9)
plt.show()

x, w = harmonics.quadrature(6)
M = len(x)
quad = jnp.asarray(np.stack([np.repeat(x, M, 0), np.tile(x, (M, 1))], 1))
weights = jnp.asarray(np.outer(w, w).reshape(-1))
Ao, Bo = harmonics.pairs(3, "odd")
Y = harmonics.sh(quad[:, 0], 3)[:, Ao] * harmonics.sh(quad[:, 1], 3)[:, Bo]
dens = jax.vmap(lambda l: gauge.density(state, l) - gauge.base.density(state, l))(quad)
print(
    "largest change of an odd moment:",
    float(jnp.max(jnp.abs(weights * dens @ Y))),
    "; largest change of the density on the slice:",
    round(m, 4),
)
print(
    f"held-out L/L0 against its own L(0): {summary['normalized_loss']:.4g}; "
    f"against the svd gauge's L(0): {summary.get('normalized_loss_vs_base', float('nan')):.4g}"
)
print(f"notebook time: {time.perf_counter() - T0:.0f} s")
