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
# # 03 · Velocity fields and densities on the spheres
#
# A point of the hidden-variable space is $\lambda = (l_1, l_2) \in S^2 \times S^2$. For
# one state $\rho$ the svd gauge (eq. 34) gives the density $w = (4\pi)^2 p_\rho$
# (relative to uniform), and the dynamics $\dot\rho = -i[H, \rho]$ moves it with
# $\partial_t w$. A velocity field $V = (V_1, V_2)$ must explain $\partial_t w$ by
# transport: $\partial_t w + w\,\mathrm{div}V + V\cdot\nabla w = 0$.
#
# Maps are Mollweide projections of the $l_1$ sphere (longitude, latitude), with $l_2$
# held fixed (a slice) or averaged out (a marginal). Fields: the canonical runs when
# present (`experiments/runs/NAME/seed_0`), else small fields trained here.

# %%
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from lhvjax import config, fields, floor, landscape, maps, quantum
from lhvjax.sphere import uniform

jax.config.update("jax_enable_x64", True)
SMALL = os.environ.get("LHVJAX_SMALL", "1") == "1"
ROOT = Path("..") if Path.cwd().name == "notebooks" else Path(".")  # relative: tidy outputs
EXPERIMENTS = Path(os.environ.get("LHVJAX_EXPERIMENTS", ROOT / "experiments"))
T0 = time.perf_counter()
TINY = landscape.tiny_overrides(SMALL)  # only where a canonical run is missing
GRID = maps.lonlat_grid(72, 36) if SMALL else maps.lonlat_grid(144, 72)
ARROWS = maps.lonlat_grid(18, 9, margin=0.15)

# %% [markdown]
# ## The fields and one state

# %%
free = landscape.load_or_train(EXPERIMENTS, "free_svd", 0, TINY)
heis = landscape.load_or_train(EXPERIMENTS, "heisenberg_svd", 0, TINY)
for name, s in (("free_svd", free), ("heisenberg_svd", heis)):
    print(f"{name}: {s.source}; held-out L/L0 = {s.summary['normalized_loss']:.4g}")
p_free = landscape.cast(free.params, jnp.float64)
p_heis = landscape.cast(heis.params, jnp.float64)
gauge = heis.problem.gauge
H_heis = heis.problem.hamiltonian_at(0.0)
H_free = free.problem.hamiltonian_at(0.0)

state = jax.tree.map(lambda x: x[0], quantum.random_states(jax.random.key(7), 1, 0.2, "hs"))
S = np.linalg.svd(np.asarray(state.T), compute_uv=False)
print(
    "a =",
    np.round(state.a, 4),
    " b =",
    np.round(state.b, 4),
    " singular values of T =",
    np.round(S, 4),
)
L2 = np.array([0.0, 0.0, 1.0])  # the fixed l2 of the slices: the north pole

# %% [markdown]
# ## The density and how it changes
#
# Top: the marginal of $w$ over $l_2$ and the slice at $l_2$ = north pole. Bottom:
# $\partial_t w$ on that slice under Heisenberg and under the noninteracting control. The
# kinks are the great circles where the svd gauge's ramps $R(x) = \max(x, 0)$ switch on.

# %%
w_marg = maps.density_marginal(gauge, state, GRID, jax.random.key(1), 128 if SMALL else 512)
w_slice = maps.density_slice(gauge, state, GRID, L2)
vel = {n: quantum.bloch_derivative(H, state) for n, H in (("heis", H_heis), ("free", H_free))}
dw = {n: maps.density_rate_slice(gauge, state, v, GRID, L2) for n, v in vel.items()}

fig, axes = plt.subplots(2, 2, figsize=(11, 6), subplot_kw={"projection": "mollweide"})
panels = [
    (w_marg, "w marginal over l2", "viridis", None),
    (w_slice, "w(l1 | l2 = north)", "viridis", None),
    (dw["heis"], "dw/dt, Heisenberg", "RdBu_r", "sym"),
    (dw["free"], "dw/dt, noninteracting", "RdBu_r", "sym"),
]
for ax, (v, title, cmap, sym) in zip(axes.ravel(), panels, strict=True):
    kw = {}
    if sym:
        m = np.abs(v).max()
        kw = dict(vmin=-m, vmax=m)
    fig.colorbar(maps.mollweide(ax, GRID, v, cmap=cmap, **kw), ax=ax, shrink=0.7)
    ax.set_title(title, fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The learned fields: $V_1$ over $l_1$ with $l_2$ fixed
#
# Left: the noninteracting control against its exact field $V_1 = \omega_1 n_1 \times l_1$
# (Theorem 1). Right: the Heisenberg field against the least-squares optimum over the
# rotation-invariant basis (degree 4), the best state-independent field of that class.
# Colour: $|V_1|$ of the learned field.

# %%
fit_cfg = config.load(EXPERIMENTS / "heisenberg_svd.toml", ["train.states=32", "train.points=256"])
fit = floor.run_floor(fit_cfg, 4, batches=2 if SMALL else 8, basis="invariant", train_eval=False)
opt = floor.basis_field(floor.make_basis("invariant", 4), fit["_solution"].c)
print(
    f"invariant floor (K=4): held-out L/L0 = {fit['normalized_loss']:.4g} "
    f"± {fit['normalized_loss_stderr']:.2g}"
)
pc = free.cfg.physics
exact = fields.rotation_field(pc.omega1, pc.n1, pc.omega2, pc.n2)

pairs = [
    ("noninteracting: learned", free.field, p_free, "exact", exact, {}),
    ("Heisenberg: learned", heis.field, p_heis, "floor optimum", opt, {}),
]
fig, axes = plt.subplots(1, 2, figsize=(13, 4), subplot_kw={"projection": "mollweide"})
for ax, (title, f, p, ref_name, ref, rp) in zip(axes, pairs, strict=True):
    V, _ = maps.field_slice(f, p, GRID.x.reshape(-1, 3), L2)
    speed = np.linalg.norm(V[:, 0], axis=-1).reshape(GRID.lon.shape)
    fig.colorbar(maps.mollweide(ax, GRID, speed, cmap="magma"), ax=ax, shrink=0.7, label="|V1|")
    Va, _ = maps.field_slice(f, p, ARROWS.x.reshape(-1, 3), L2)
    Vr, _ = maps.field_slice(ref, rp, ARROWS.x.reshape(-1, 3), L2)
    sh = ARROWS.x.shape
    maps.quiver(ax, ARROWS, Va[:, 0].reshape(sh), color="w", width=0.003)
    maps.quiver(ax, ARROWS, Vr[:, 0].reshape(sh), color="c", width=0.002, alpha=0.8)
    err = np.linalg.norm(Va - Vr) / np.linalg.norm(Vr)
    ax.set_title(f"{title} (white) vs {ref_name} (cyan); rel. difference {err:.2f}", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The Heisenberg field in two curves
#
# Heisenberg commutes with every $U \otimes U$, so a rotation-covariant field has
# $V_1 = f(c)\, e_\parallel + g(c)\, e_\times$ with $c = l_1\cdot l_2$,
# $e_\parallel \propto P(l_1) l_2$ (towards $l_2$) and $e_\times \propto l_1 \times l_2$
# (`maps.invariant_components`). Dots: the learned field at random points (its spread
# at fixed $c$ is the part that is not covariant); lines: the floor optimum.

# %%
lam = uniform(jax.random.key(3), 600 if SMALL else 3000, 2)
V_net = np.asarray(jax.jit(lambda x: fields.evaluate(heis.field, p_heis, x)[0][0])(lam))
V_opt = np.asarray(fields.evaluate(opt, {}, lam)[0][0])
l1, l2 = np.asarray(lam[:, 0]), np.asarray(lam[:, 1])
c, par_n, rot_n = maps.invariant_components(V_net[:, 0], l1, l2)
_, par_o, rot_o = maps.invariant_components(V_opt[:, 0], l1, l2)
order = np.argsort(c)
fig, ax = plt.subplots(figsize=(7, 3.8))
ax.plot(c, par_n, ".", ms=2, color="C0", alpha=0.5, label="learned: along P(l1) l2")
ax.plot(c, rot_n, ".", ms=2, color="C3", alpha=0.5, label="learned: along l1 x l2")
ax.plot(c[order], par_o[order], "-", color="C0", lw=2, label="floor optimum")
ax.plot(c[order], rot_o[order], "-", color="C3", lw=2)
ax.set_xlabel("c = l1 · l2")
ax.set_ylabel("component of V1 / sin(angle)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
corr = np.corrcoef(np.concatenate([par_n, rot_n]), np.concatenate([par_o, rot_o]))[0, 1]
print(f"correlation of the learned components with the floor optimum's: {corr:.3f}")

# %%
print(f"notebook time: {time.perf_counter() - T0:.0f} s")
