"""The Bell base model on S^2 and Monte Carlo estimators of its statistics.

Each party holds a unit vector lambda; measuring spin along n gives +1 exactly when
n . lambda > 0, so q(up | n, lambda) = Theta(n . lambda). Quantum mechanics asks for

    E[sign(n . lambda_1)] = n . a,    E[sign(n1 . lambda_1) sign(n2 . lambda_2)] = n1^T T n2.

Estimators take samples either drawn exactly from p (weights None) or drawn uniformly
and weighted by the density relative to the uniform measure, E_p[f] = E_unif[w f].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lhvjax.quantum import Bloch

__all__ = [
    "Estimate",
    "outcome",
    "prob_up",
    "mean_with_stderr",
    "single",
    "joint",
    "quantum_single",
    "quantum_joint",
]


class Estimate(NamedTuple):
    """A Monte Carlo mean and its standard error."""

    mean: jax.Array
    stderr: jax.Array


def outcome(n: jax.Array, lam: jax.Array) -> jax.Array:
    """The +-1 outcome of measuring along n for hidden variable lam."""
    return jnp.where(jnp.sum(n * lam, axis=-1) > 0, 1.0, -1.0).astype(lam.dtype)


def prob_up(n: jax.Array, lam: jax.Array) -> jax.Array:
    """q(up | n, lambda) = Theta(n . lambda)."""
    return (jnp.sum(n * lam, axis=-1) > 0).astype(lam.dtype)


def mean_with_stderr(values: jax.Array, weights: jax.Array | None = None, axis=0) -> Estimate:
    """Mean of values (times weights) over `axis`, with the standard error of iid samples."""
    x = values if weights is None else values * weights
    n = x.shape[axis]
    return Estimate(jnp.mean(x, axis), jnp.std(x, axis, ddof=1) / jnp.sqrt(n))


def single(n: jax.Array, lam: jax.Array, party: int, weights: jax.Array | None = None) -> Estimate:
    """E[sign(n . lambda_party)] from samples lam (M, N, 3)."""
    return mean_with_stderr(outcome(n, lam[:, party]), weights)


def joint(
    n1: jax.Array, n2: jax.Array, lam: jax.Array, weights: jax.Array | None = None
) -> Estimate:
    """E[sign(n1 . lambda_1) sign(n2 . lambda_2)] from samples lam (M, 2, 3)."""
    return mean_with_stderr(outcome(n1, lam[:, 0]) * outcome(n2, lam[:, 1]), weights)


def quantum_single(state: Bloch, n: jax.Array, party: int) -> jax.Array:
    """<n . sigma> on one party: n . a or n . b."""
    r = state.a if party == 0 else state.b
    return jnp.sum(n * r, axis=-1)


def quantum_joint(state: Bloch, n1: jax.Array, n2: jax.Array) -> jax.Array:
    """<n1.sigma x n2.sigma> = n1^T T n2."""
    return jnp.einsum("...j,...jk,...k->...", n1, state.T, n2)
