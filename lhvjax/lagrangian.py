"""The Lagrangian form (Definition 3, eq. 5): move hidden variables, compare statistics.

Draw lambda0 ~ p_rho0, integrate d lambda / dt = V(lambda, t) on the spheres and ask that
the moved samples reproduce quantum mechanics at later times t_1..t_k:

    E[Y_A(l1(t)) Y_B(l2(t))] = m_AB(rho(t))        for the odd pairs (A, B), degrees <= L,

m_AB the moments every valid gauge shares (`harmonics.linear_moments`; the statistics fix
them, section 3 of DESIGN). Only the start is tied to a gauge: after t = 0 the
distribution is whatever the flow makes of it, so a zero loss would be a dynamical LHV
model in the sense of Conjecture 1, not only of the fixed-gauge counterexample.

Training: the mean over states of sum_(j, AB) (moment mismatch)^2, the square taken
across sample blocks so that it is unbiased (`residual.block_square`), normalised by the
same figure for V = 0 (samples that stay where they started), which is known exactly:
sum_j |m(rho(t_j)) - m(rho0)|^2. Evaluation adds the sign
statistics themselves, E[sign(n1 . l1)], E[sign(n2 . l2)] and E[sign(n1 . l1) sign(n2 .
l2)] on random directions, against n1 . a(t), n2 . b(t), n1^T T(t) n2.

Samples: "exact" draws per state from the gauge's sampler (svd: the mixture of eq. 33,
jittable); "weighted" draws uniform points once, flows them once, and weighs them by
w_rho0(lambda0) for every state (E_{p_t}[f] = E_u[w_rho0(lambda0) f(lambda(t))]): any gauge,
and the field's cost no longer grows with the number of states.

The integrator is diffrax (Tsit5, fixed steps) on the ambient R^3 of each sphere; the
fields are tangent at lambda / |lambda| (`sphere.tangent`), so the flow keeps |lambda| up to
the integrator's error and the saved points are renormalised.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from lhvjax import harmonics, quantum
from lhvjax.fields import values
from lhvjax.gauges import SVD
from lhvjax.quantum import Bloch
from lhvjax.residual import block_ratio_with_stderr, block_square
from lhvjax.sphere import normalize, uniform

__all__ = [
    "SAMPLINGS",
    "Lagrangian",
    "LagrangianBatch",
    "flow",
    "odd_moments",
    "sign_statistics",
    "quantum_signs",
]

SAMPLINGS = ("exact", "weighted")


class LagrangianBatch(NamedTuple):
    rho0: Bloch  # (S,) initial states
    lam0: jax.Array  # (S, n, 2, 3) exact samples, or (n, 2, 3) shared uniform points
    weights: jax.Array | None  # (S, n) w_rho0(lam0) for "weighted"; None for "exact"
    times: jax.Array  # (k,) t_1..t_k
    horizon: jax.Array  # () t_k: the flow runs over [0, horizon]
    states: Bloch  # (S, k) rho(t_j)
    directions: jax.Array  # (D, 2, 3) measurement directions for the sign statistics


@dataclasses.dataclass(frozen=True)
class Lagrangian:
    """Moments of flowed samples against quantum mechanics at `times` evenly spaced times
    in (0, t_max], integrated with `steps` Tsit5 steps over [0, t_max]."""

    degree: int = 3
    times: int = 4
    t_max: float = 1.0
    steps: int = 8
    sampling: str = "exact"
    blocks: int = 4
    directions: int = 16

    name = "lagrangian"

    def __post_init__(self):
        harmonics.pairs(self.degree, "odd")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; choose one of {SAMPLINGS}")
        for name in ("times", "steps", "directions"):
            if getattr(self, name) < 1:
                raise ValueError(f"lagrangian.{name} must be at least 1")
        if self.blocks < 2:
            raise ValueError(f"lagrangian.blocks must be at least 2; got {self.blocks}")
        if not self.t_max > 0:
            raise ValueError(f"lagrangian.t_max must be positive; got {self.t_max}")

    def sample(
        self, problem, key, groups, states, points, dtype=None, *, visibility=None, t_max=None
    ) -> LagrangianBatch:
        """groups * states initial states from S_v, `points` samples each (or shared)."""
        dtype = dtype or jnp.zeros(()).dtype
        gauge = problem.gauge
        if self.sampling == "exact" and not isinstance(gauge, SVD):
            raise ValueError(
                f"exact samples inside a jitted step exist for the svd gauge only; with the "
                f"{gauge.name!r} gauge set lagrangian.sampling = 'weighted'"
            )
        ks, kl, kd = jax.random.split(key, 3)
        v = problem.visibility if visibility is None else visibility
        S = groups * states
        rho0 = quantum.random_states(ks, S, 1.0, problem.ensemble, dtype).scale(v)
        horizon = jnp.asarray(self.t_max if t_max is None else t_max, dtype)
        times = horizon * jnp.arange(1, self.times + 1, dtype=dtype) / self.times
        evolve = lambda s: jax.vmap(lambda t: quantum.evolve(problem.hamiltonian, s, t))(times)
        rho_t = jax.tree.map(lambda x: x.astype(dtype), jax.vmap(evolve)(rho0))
        if self.sampling == "exact":
            keys = jax.random.split(kl, S)
            lam0 = jax.vmap(lambda k, s: gauge.sample(k, s, points))(keys, rho0)
            weights = None
        else:
            lam0 = uniform(kl, points, 2, dtype)
            weights = jax.vmap(lambda s: jax.vmap(lambda l: gauge.density(s, l))(lam0))(rho0)
        dirs = uniform(kd, self.directions, 2, dtype)
        return LagrangianBatch(rho0, lam0, weights, times, horizon, rho_t, dirs)

    def _flowed(self, field, params, batch: LagrangianBatch):
        return flow(field, params, batch.lam0, batch.times, batch.horizon, self.steps)

    def _mismatch(self, problem, field, params, batch, blocks, stats):
        """Block means of (statistic - quantum) over the samples, (S, blocks, k * F), and
        the exact mismatch of V = 0, sum_(j, F) (quantum(t_j) - quantum(0))^2 per state.

        Control variate: the samples' statistic at t = 0 has the known mean quantum(0)
        (they are samples of p_rho0), so each sample contributes f(lambda(t)) - f(lambda0)
        against quantum(t) - quantum(0). Unbiased as before, but the noise is now that of
        the displacement, not of f itself: without it the O(v) changes of the statistics
        drowned in their O(1) sampling noise and training did not move off V = 0.
        """
        lam_t = self._flowed(field, params, batch)  # (k, [S,] n, 2, 3)
        start = stats.target(batch.rho0, batch)[:, None]  # (S, 1, F)
        change = stats.target(batch.states, batch) - start  # (S, k, F)
        f = stats.values(lam_t, batch) - stats.values(batch.lam0, batch)[None]  # (k, [S,] n, F)
        if batch.weights is None:
            f = jnp.swapaxes(f, 0, 1)  # (S, k, n, F)
        else:
            f = batch.weights[:, None, :, None] * f[None]
        S, k, n, F = f.shape
        if n % blocks:
            raise ValueError(f"{n} samples do not split into {blocks} blocks; use a multiple")
        m = jnp.mean(f.reshape(S, k, blocks, n // blocks, F), 3)  # (S, k, b, F)
        R = jnp.swapaxes(m - change[:, :, None], 1, 2).reshape(S, blocks, k * F)
        return R, jnp.sum(change**2, (1, 2))

    def loss(self, problem, field, params, batch: LagrangianBatch, scale=1.0):
        R, _ = self._mismatch(problem, field, params, batch, self.blocks, _Moments(self.degree))
        return jnp.mean(block_square(R)) / scale

    def evaluate(self, problem, field, params, batch: LagrangianBatch) -> dict[str, jax.Array]:
        blocks = max(self.blocks, 8)
        R, D = self._mismatch(problem, field, params, batch, blocks, _Moments(self.degree))
        q, se = block_ratio_with_stderr(R, D)
        Rs, Ds = self._mismatch(problem, field, params, batch, blocks, _Signs())
        qs, ses = block_ratio_with_stderr(Rs, Ds)
        F = Rs.shape[-1]
        return {
            "normalized_loss": q,
            "normalized_loss_stderr": se,
            "loss": jnp.mean(block_square(R)),
            "loss_zero_field": jnp.mean(D),
            "sign_normalized_loss": qs,
            "sign_normalized_loss_stderr": ses,
            # root mean square error of one sign statistic (bias-corrected, so clipped at 0)
            "sign_rms_error": jnp.sqrt(jnp.maximum(jnp.mean(block_square(Rs)) / F, 0.0)),
            "sign_rms_error_zero_field": jnp.sqrt(jnp.mean(Ds) / F),
        }


class _Moments:
    """Odd moments up to degree L as the statistics."""

    def __init__(self, L):
        self.L = L

    def values(self, lam, batch):
        return odd_moments_per_sample(lam, self.L)

    def target(self, states, batch):
        return harmonics.linear_moments(states, self.L, "odd")


class _Signs:
    """The three sign statistics per direction pair."""

    def values(self, lam, batch):
        return sign_values(lam, batch.directions)

    def target(self, states, batch):
        return quantum_signs(states, batch.directions)


def flow(field, params, lam0: jax.Array, times: jax.Array, horizon, steps: int) -> jax.Array:
    """Points lam0 (..., 2, 3) moved by d lambda / dt = V(lambda, t), at `times`: (k, ..., 2, 3).

    diffrax Tsit5 with `steps` equal steps over [0, horizon]; differentiable in the
    field's parameters (reverse mode through the solver's steps). DirectAdjoint, not the
    default RecursiveCheckpointAdjoint: with a few fixed steps storing them all is cheap,
    and the default (jax 0.10.2, diffrax 0.7.2, CPU) returned wrong points for batches of
    1024 or more (a regression test compares batch sizes and an RK4 reference) and fails
    inside shard_map (diffrax issue 765), which the sweeps use.
    """
    shape = lam0.shape
    y0 = lam0.reshape(-1, *shape[-2:])
    term = diffrax.ODETerm(lambda t, y, args: values(field, params, y, t)[0])
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        t0=0.0,
        t1=horizon,
        dt0=horizon / steps,
        y0=y0,
        saveat=diffrax.SaveAt(ts=times),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=steps + 1,
        adjoint=diffrax.DirectAdjoint(),
    )
    return normalize(sol.ys).reshape(times.shape[0], *shape)


def odd_moments_per_sample(lam: jax.Array, L: int) -> jax.Array:
    """Y_A(l1) Y_B(l2) over `harmonics.pairs(L, "odd")` at points (..., 2, 3): (..., M)."""
    A, B = harmonics.pairs(L, "odd")
    Y1, Y2 = harmonics.sh(lam[..., 0, :], L), harmonics.sh(lam[..., 1, :], L)
    return Y1[..., A] * Y2[..., B]


def odd_moments(lam: jax.Array, L: int, weights: jax.Array | None = None) -> jax.Array:
    """The odd moments (M,) of samples lam (n, 2, 3), optionally weighted (n,)."""
    f = odd_moments_per_sample(lam, L)
    return jnp.mean(f if weights is None else weights[:, None] * f, 0)


def sign_values(lam: jax.Array, directions: jax.Array) -> jax.Array:
    """Per sample (..., 2, 3) and direction pair (D, 2, 3): the outcomes s1, s2, s1 s2 (..., 3D)."""
    s = jnp.sign(jnp.einsum("...ki,dki->...dk", lam, directions))  # (..., D, 2)
    out = jnp.stack([s[..., 0], s[..., 1], s[..., 0] * s[..., 1]], -1)
    return out.reshape(*out.shape[:-2], -1)


def sign_statistics(lam, directions, weights=None) -> jax.Array:
    """E[sign(n1.l1)], E[sign(n2.l2)], E[sign(n1.l1) sign(n2.l2)] per direction pair: (3D,)."""
    f = sign_values(lam, directions)
    return jnp.mean(f if weights is None else weights[:, None] * f, 0)


def quantum_signs(states: Bloch, directions: jax.Array) -> jax.Array:
    """n1 . a, n2 . b, n1^T T n2 for states (...,) and direction pairs (D, 2, 3): (..., 3D)."""
    n1, n2 = directions[:, 0], directions[:, 1]
    a = jnp.einsum("...i,di->...d", states.a, n1)
    b = jnp.einsum("...i,di->...d", states.b, n2)
    T = jnp.einsum("di,...ij,dj->...d", n1, states.T, n2)
    out = jnp.stack([a, b, T], -1)
    return out.reshape(*out.shape[:-2], -1)
