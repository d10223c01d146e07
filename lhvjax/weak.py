"""The continuity equation in weak form, against products of spherical harmonics.

Multiplying r = dw/dt + div(w V) by a test function phi and integrating by parts on the
spheres removes every derivative of the density:

    R_phi(rho) = E_u[phi dw/dt] - E_u[w V . grad phi] = d/dt E_p[phi] - E_p[V . grad phi],

E_u the uniform mean on S^2 x S^2, w = (4 pi)^2 p. R_phi = E_u[r phi], so the strong
residual vanishing gives R_phi = 0 for every phi; with phi = Y_A(l1) Y_B(l2) over all
degrees <= L ("full") the weak form is the strong one seen through a band limit. Over the
odd products only ("odd", `harmonics.pairs`) it asks just that the field move the moments
the Bell statistics see at the rate quantum mechanics moves them: a relaxation that lets
the invisible moments drift, i.e. lets the gauge change in time.

Loss: L(V) = E_rho sum_phi R_phi^2, normalised by L(0) = E_rho sum_phi (d/dt E_p[phi])^2.
The rates d/dt E_p[phi] are exact: every gauge gives its moments in closed form
(`Gauge.moments`; the svd gauge through Funk-Hecke on its cosine lobes) and a JVP along
rho' differentiates them. Only the flux E_u[w V . grad phi] is a Monte Carlo mean over
points; its square would be biased by a variance that depends on V, so the points are
split into blocks and the square is taken across different blocks
(`residual.block_square`), unbiased. The flux is estimated as E_u[(w - 1) V . grad phi]
- E_u[phi div V] (equal by the divergence theorem): V . grad phi alone is O(|V|) per point
with mean zero for a divergence-free V, and swamped the O(v) signal. No grad w is needed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lhvjax import harmonics
from lhvjax.fields import DeepONetField, evaluate
from lhvjax.residual import (
    Batch,
    block_ratio_with_stderr,
    block_square,
    sample_grid,
    split_params,
    state_features,
)
from lhvjax.sphere import normalize

__all__ = ["Weak", "weak_residuals"]


@dataclasses.dataclass(frozen=True)
class Weak:
    """The weak form with test functions of degree <= `degree` on each sphere.

    tests = "full" (every product but the constant) or "odd" (the Bell-visible moments);
    `blocks` splits the points for the unbiased squares (>= 2 in training; the held-out
    estimate uses max(blocks, 8) for its standard error).
    """

    degree: int = 3
    tests: str = "full"
    blocks: int = 4

    name = "weak"

    def __post_init__(self):
        harmonics.pairs(self.degree, self.tests)  # validates both
        if self.blocks < 2:
            raise ValueError(f"weak.blocks must be at least 2; got {self.blocks}")

    def sample(self, problem, key, groups, states, points, dtype=None, **overrides) -> Batch:
        return sample_grid(problem, key, groups, states, points, dtype, **overrides)

    def loss(self, problem, field, params, batch: Batch, scale=1.0):
        R, _ = weak_residuals(problem, field, params, batch, self.degree, self.tests, self.blocks)
        return jnp.mean(block_square(R)) / scale

    def evaluate(self, problem, field, params, batch: Batch) -> dict[str, jax.Array]:
        blocks = max(self.blocks, 8)
        R, D = weak_residuals(problem, field, params, batch, self.degree, self.tests, blocks)
        q, se = block_ratio_with_stderr(R, D)
        return {
            "normalized_loss": q,
            "normalized_loss_stderr": se,
            "loss": jnp.mean(block_square(R)),
            "loss_zero_field": jnp.mean(D),
        }


def weak_residuals(
    problem,
    field,
    params,
    batch: Batch,
    degree: int,
    tests: str = "full",
    blocks: int = 4,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Block means of R_phi (G*S, blocks, M) and the exact L_rho(0) = sum_phi (d/dt E_p[phi])^2
    per state (G*S,).

    The rates d/dt E_p[phi] are exact (a JVP of the gauge's analytic `moments`); only the
    flux E_p[V . grad phi] = E_u[w V . grad phi] is a Monte Carlo mean over the batch's
    points, split into `blocks` consecutive blocks (P must divide). `weights` (P,) replaces
    the plain means by weighted sums (each block's weights summing to 1): a quadrature rule.
    """
    gauge, params = split_params(problem, params)
    P = batch.lam.shape[0]
    if P % blocks:
        raise ValueError(f"{P} points do not split into {blocks} blocks; use a multiple")
    A, B = harmonics.pairs(degree, tests)
    x = normalize(batch.lam)
    Y1, G1 = jax.vmap(harmonics.sh_and_grad, in_axes=(0, None))(x[:, 0], degree)
    Y2, G2 = jax.vmap(harmonics.sh_and_grad, in_axes=(0, None))(x[:, 1], degree)

    def rate(prepared, dprepared):  # exact d/dt E_p[phi]: a JVP of the analytic moments
        f = lambda P: gauge.moments(P, degree)[A, B]
        return jax.jvp(f, (prepared,), (dprepared,))[1]

    def blocked(z):  # (..., P) -> (..., blocks, P / blocks)
        return z.reshape(*z.shape[:-1], blocks, P // blocks)

    def one_time(t, states, velocities):
        prepared, dprepared = jax.vmap(gauge.prepare_jvp)(states, velocities)
        per_point = jax.vmap(gauge.density_prepared, in_axes=(None, 0))
        w = jax.vmap(per_point, in_axes=(0, None))(prepared, batch.lam)  # (S, P)
        features = None
        if isinstance(field, DeepONetField):
            features = jax.vmap(state_features, in_axes=(None, 0, 0, 0, 0, None))(
                gauge, states, velocities, prepared, dprepared, problem.visibility
            )
        V, div = evaluate(field, params, batch.lam, t, features)  # (S', P, 2, 3), (S', P)
        g1 = jnp.einsum("spi,pki->spk", V[:, :, 0], G1)  # V_1 . grad Y_k(l1)
        g2 = jnp.einsum("spi,pki->spk", V[:, :, 1], G2)
        y1, y2 = blocked(Y1.T), blocked(Y2.T)  # (K, b, q)
        g1, g2 = blocked(jnp.swapaxes(g1, 1, 2)), blocked(jnp.swapaxes(g2, 1, 2))  # (S', K, b, q)
        q = P // blocks
        # control variate: E_u[w V.grad phi] = E_u[(w - 1) V.grad phi] - E_u[phi div V]
        # (divergence theorem); V.grad phi is O(|V|) with mean zero when div V = 0, and
        # would otherwise dominate the noise (w - 1 = O(v))
        u = blocked(w - 1)  # (S, b, q)
        d = blocked(div)  # (S', b, q)
        if weights is not None:
            u, d = u * q * blocked(weights), d * q * blocked(weights)
        # S' = 1 broadcasts over the states for a field that does not see them. The div V
        # term is left at S' and broadcast by the sum: broadcasting d to (S, b, q) before
        # its einsum made XLA's CPU backend return garbage (up to 1e33, NaN) at degree 1
        g1, g2 = (jnp.broadcast_to(g, (w.shape[0], *g.shape[1:])) for g in (g1, g2))
        flux = (
            jnp.einsum("sbq,skbq,mbq->sbkm", u, g1, y2)
            + jnp.einsum("sbq,kbq,smbq->sbkm", u, y1, g2)
            - jnp.einsum("sbq,kbq,mbq->sbkm", d, y1, y2)
        ) / q
        exact = jax.vmap(rate)(prepared, dprepared)  # (S, M)
        return exact[:, None] - flux[..., A, B], jnp.sum(exact**2, -1)

    R, D = jax.vmap(one_time)(batch.t, batch.states, batch.velocities)
    return R.reshape(-1, *R.shape[2:]), D.reshape(-1)
