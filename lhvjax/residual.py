"""The continuity residual in strong form and its held-out estimate (DESIGN section 4).

At a point lambda of S^2 x S^2 and a state rho with velocity rho' = -i[H, rho],

    r = dw/dt + w div V + V . grad w,        dw/dt = D_rho w [rho'] (a JVP),

with w = (4 pi)^2 p the density relative to uniform (the equation is homogeneous in p).
L(V) = E_rho E_lambda r^2 and the reported figure is L(V) / L(0), L(0) = E (dw/dt)^2: the
fraction of the evolution of the distributions that the field leaves unexplained.

A batch is a grid: G times, S states per time, P points shared by all of them. A field
that does not see the state is evaluated once per (time, point); only the cheap gauge
terms are paid per (state, point), and the SVD with its JVP once per state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lhvjax import quantum
from lhvjax.fields import DeepONetField, evaluate
from lhvjax.gauges import SVD, Gauge, Learned, get_gauge
from lhvjax.quantum import Bloch, TimeDependent
from lhvjax.sphere import uniform

__all__ = [
    "Problem",
    "Strong",
    "Batch",
    "split_params",
    "sample_batch",
    "state_features",
    "residuals",
    "loss",
    "ratio_with_stderr",
    "block_square",
    "block_ratio_with_stderr",
    "normalized_loss",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """What is being explained: a Hamiltonian, a gauge and the states S_v.

    t_max = 0 draws the states from S_v itself (enough for a time-independent H, since
    S_v is invariant); t_max > 0 draws rho0 from S_v and evolves it to t ~ U[0, t_max].
    `formulation` says what is minimised: `Strong()` (the default, this module),
    `weak.Weak` or `lagrangian.Lagrangian`; `sample_batch`, `loss` and `normalized_loss`
    dispatch to it.
    """

    hamiltonian: Any  # (4, 4) Hermitian matrix or quantum.TimeDependent
    gauge: Gauge
    visibility: float
    ensemble: str = "hs"
    t_max: float = 0.0
    n_spheres: int = 2
    formulation: Any = None

    def __post_init__(self):
        object.__setattr__(self, "gauge", get_gauge(self.gauge))
        if self.formulation is None:
            object.__setattr__(self, "formulation", Strong())
        self.gauge.check_visibility(self.visibility)

    def hamiltonian_at(self, t):
        H = self.hamiltonian
        return H.fn(t) if isinstance(H, TimeDependent) else jnp.asarray(H)


class Batch(NamedTuple):
    t: jax.Array  # (G,)
    states: Bloch  # leaves (G, S, ...)
    velocities: Bloch  # d/dt of the states, same shapes
    lam: jax.Array  # (P, N, 3)


def split_params(problem: Problem, params) -> tuple[Gauge, Any]:
    """(gauge, field parameters): a learned gauge is bound to its part of the parameters.

    A run with a learned gauge trains {"field": ..., "gauge": ...} together; any other run's
    parameters are the field's alone.
    """
    gauge = problem.gauge
    if isinstance(gauge, Learned):
        return gauge.bind(params["gauge"]), params["field"]
    return gauge, params


def sample_batch(
    problem: Problem,
    key,
    groups: int,
    states: int,
    points: int,
    dtype=None,
    *,
    visibility=None,
    t_max=None,
):
    """A fresh batch for the problem's formulation from `key`.

    For the strong and weak forms a grid: `groups` times, `states` states at each and
    `points` uniform points (`Batch`). `visibility` and `t_max` override the problem's and
    may be traced (a vmapped sweep).
    """
    return problem.formulation.sample(
        problem, key, groups, states, points, dtype, visibility=visibility, t_max=t_max
    )


def sample_grid(
    problem: Problem,
    key,
    groups: int,
    states: int,
    points: int,
    dtype=None,
    *,
    visibility=None,
    t_max=None,
) -> Batch:
    """A fresh grid: `groups` times, `states` states at each, `points` uniform points.

    An overriding `t_max` always evolves. The draws are the same whatever the overrides:
    states are drawn at visibility 1 (an exact identity) and scaled by v.
    """
    dtype = dtype or jnp.zeros(()).dtype
    kt, ks, kp = jax.random.split(key, 3)
    v = problem.visibility if visibility is None else visibility
    rho0 = quantum.random_states(ks, groups * states, 1.0, problem.ensemble, dtype).scale(v)
    rho0 = jax.tree.map(lambda x: x.reshape(groups, states, *x.shape[1:]), rho0)
    if t_max is not None or problem.t_max > 0:
        t = jax.random.uniform(kt, (groups,), dtype) * (problem.t_max if t_max is None else t_max)
        rho = jax.vmap(lambda s, ti: quantum.evolve(problem.hamiltonian, s, ti))(rho0, t)
    else:
        t = jnp.zeros((groups,), dtype)
        rho = rho0
    vel = jax.vmap(lambda s, ti: quantum.bloch_derivative(problem.hamiltonian_at(ti), s))(rho, t)
    vel = jax.tree.map(lambda x: x.astype(dtype), vel)
    return Batch(t, rho, vel, uniform(kp, points, problem.n_spheres, dtype))


def _axial(A):
    return jnp.stack([A[..., 2, 1], A[..., 0, 2], A[..., 1, 0]], axis=-1)


def state_features(
    gauge: Gauge, state: Bloch, velocity: Bloch, prepared, dprepared, visibility: float
) -> jax.Array:
    """What a state-dependent field sees of one state: functions of rho, scaled to O(1).

    The Bloch coordinates and their velocity -i[H, rho] (a function of rho for a given
    H); for the svd gauge also the singular values, the sign-invariant frames u_j v_j^T
    and the frames' angular velocities (axial vectors of U' U^T and V' V^T), because the
    density moves with its frame and the exact field holds those rotations linearly.
    """
    f = [state.flat() / visibility, velocity.flat() / visibility]
    if isinstance(gauge, SVD):
        P, dP = prepared, dprepared
        f += [
            P.S / visibility,
            dP.S / visibility,
            jnp.einsum("ij,kj->jik", P.U, P.V).reshape(-1),
            _axial(dP.U @ P.U.T),
            _axial(dP.V @ P.V.T),
        ]
    return jnp.concatenate(f)


def residuals(problem: Problem, field, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(r, dw/dt), each (G, S, P): the strong-form residual of `field` and the field-free
    term whose mean square is L(0)."""
    gauge, params = split_params(problem, params)

    def one_time(t, states, velocities):
        prepared, dprepared = jax.vmap(gauge.prepare_jvp)(states, velocities)
        per_point = jax.vmap(gauge.terms, in_axes=(None, None, 0))
        w, dw, grad = jax.vmap(per_point, in_axes=(0, 0, None))(prepared, dprepared, batch.lam)
        features = None
        if isinstance(field, DeepONetField):
            features = jax.vmap(state_features, in_axes=(None, 0, 0, 0, 0, None))(
                gauge, states, velocities, prepared, dprepared, problem.visibility
            )
        V, div = evaluate(field, params, batch.lam, t, features)
        r = dw + w * div + jnp.sum(V * grad, axis=(-1, -2))
        return r, dw

    return jax.vmap(one_time)(batch.t, batch.states, batch.velocities)


def loss(problem: Problem, field, params, batch, scale: float | jax.Array = 1.0):
    """The problem's formulation's training loss on `batch`, divided by `scale` (a fixed L(0))."""
    return problem.formulation.loss(problem, field, params, batch, scale)


def ratio_with_stderr(num: jax.Array, den: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mean(num) / mean(den) over a rows x columns grid, with a standard error.

    Rows (states) and columns (points) are independent draws but cells of one row or
    column share a draw, so the variance of a grid mean is estimated by the crossed
    two-way form var(row means) / R + var(column means) / C. The ratio is linearised
    (delta method): z = num - q den.
    """
    q = jnp.mean(num) / jnp.mean(den)
    z = num - q * den
    R, C = z.shape
    var = jnp.var(jnp.mean(z, 1), ddof=1) / R + jnp.var(jnp.mean(z, 0), ddof=1) / C
    return q, jnp.sqrt(var) / jnp.mean(den)


def block_square(R: jax.Array) -> jax.Array:
    """An unbiased estimate of sum_m (E R_m)^2 from B independent block means R (..., B, M).

    The square of a Monte Carlo mean is biased by its variance, which depends on the
    field, so a loss built from it would not be minimised by the right field. Products of
    different blocks are unbiased: (|sum_b R_b|^2 - sum_b |R_b|^2) / (B (B - 1)).
    """
    B = R.shape[-2]
    total = jnp.sum(R, -2)
    return (jnp.sum(total**2, -1) - jnp.sum(R**2, (-2, -1))) / (B * (B - 1))


def block_ratio_with_stderr(R: jax.Array, D: jax.Array) -> tuple[jax.Array, jax.Array]:
    """mean_s |E R_s|^2 / mean_s |E D_s|^2 from block means R, D (S, B, M), with a s.e.

    D may instead be the exact denominators (S,) when they are known (the Lagrangian form's
    zero-field mismatch is); then only the numerator is estimated. Rows s are independent
    states; blocks share the points, so the variance has a state part (delta method over
    rows) and a block part (delete-one-block jackknife), added as in `ratio_with_stderr`.
    Needs B >= 3.
    """
    S, B, _ = R.shape
    if B < 3:
        raise ValueError(f"a standard error over blocks needs at least 3 blocks; got {B}")
    exact = D.ndim == 1
    N, Z = block_square(R), D if exact else block_square(D)
    q = jnp.mean(N) / jnp.mean(Z)
    var_states = jnp.var(N - q * Z, ddof=1) / S / jnp.mean(Z) ** 2

    def without(X):  # (B,) per-state means of the estimate with block b left out
        total, sq = jnp.sum(X, 1), jnp.sum(X**2, (1, 2))
        rest = total[:, None] - X  # (S, B, M)
        est = (jnp.sum(rest**2, -1) - (sq[:, None] - jnp.sum(X**2, -1))) / ((B - 1) * (B - 2))
        return jnp.mean(est, 0)

    qb = without(R) / (jnp.mean(Z) if exact else without(D))
    var_blocks = (B - 1) / B * jnp.sum((qb - jnp.mean(qb)) ** 2)
    return q, jnp.sqrt(var_states + var_blocks)


def normalized_loss(problem: Problem, field, params, batch) -> dict[str, jax.Array]:
    """The formulation's held-out figures: L(V) / L(0) with its standard error and more."""
    return problem.formulation.evaluate(problem, field, params, batch)


class Strong:
    """The strong form: r = dw/dt + w div V + V . grad w at every point (module doc)."""

    name = "strong"

    def sample(self, problem, key, groups, states, points, dtype=None, **overrides) -> Batch:
        return sample_grid(problem, key, groups, states, points, dtype, **overrides)

    def loss(self, problem, field, params, batch: Batch, scale=1.0):
        r, _ = residuals(problem, field, params, batch)
        return jnp.mean(r**2) / scale

    def evaluate(self, problem, field, params, batch: Batch) -> dict[str, jax.Array]:
        return strong_normalized_loss(problem, field, params, batch)


def strong_normalized_loss(problem: Problem, field, params, batch: Batch) -> dict[str, jax.Array]:
    """L(V) / L(0) on a (held-out) batch, with its standard error, and the raw L(V), L(0).

    Also the per-state figure mean_rho [L_rho(V) / L_rho(0)], which weighs every state
    equally. It matters for the svd gauge: there dw/dt grows like 1 / (gap between
    singular values of T), the gap density of a full-rank ensemble vanishes only
    linearly, so E (dw/dt)^2 diverges logarithmically and L(V) / L(0) is dominated by
    the few most nearly degenerate states of the sample.
    """
    r, dw = residuals(problem, field, params, batch)
    P = r.shape[-1]
    r2, d2 = (r**2).reshape(-1, P), (dw**2).reshape(-1, P)
    q, se = ratio_with_stderr(r2, d2)
    per_state = jnp.mean(r2, 1) / jnp.mean(d2, 1)
    return {
        "normalized_loss": q,
        "normalized_loss_stderr": se,
        "per_state_normalized_loss": jnp.mean(per_state),
        "per_state_normalized_loss_stderr": jnp.std(per_state, ddof=1) / jnp.sqrt(len(per_state)),
        "loss": jnp.mean(r2),
        "loss_zero_field": jnp.mean(d2),
    }
