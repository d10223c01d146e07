"""Analytic two-qubit test systems, written down once and reused by the tests.

Fixed parameters, so that every test module talks about the same physics:

* `heisenberg()`: H = (OMEGA / 4) sum_k sigma_k x sigma_k (App. C);
* `noninteracting()`: H = 1/2 (OMEGA1 N1.sigma x 1 + OMEGA2 1 x N2.sigma), whose exact
  solution is a rigid rotation of each Bloch vector (`rotate`) and whose exact velocity
  field on S^2 x S^2 is `rotation_field()`: V_k = omega_k n_k x l_k;
* `driven()`: a genuinely time-dependent H(t) (its values at different times do not commute);
* named states: `maximally_mixed()`, `werner(p)`, `product(r1, r2)`;
* random material: `states(seed, n, ...)` (a batch of S_v), `one(batch, i)`,
  `directions(seed, n)`; helpers `great_circle` and `within` (a 4-standard-error check);
* `gauge(name)` and `batched(name)`: one gauge instance per name and its jitted
  states x points functions, shared by the test modules (compiling once saves most of
  the suite's time on a CPU).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from lhvjax import quantum
from lhvjax.gauges import Gauge, get_gauge
from lhvjax.quantum import Bloch

OMEGA = 1.3  # Heisenberg coupling
OMEGA1 = 0.7  # precession rate of qubit 1
OMEGA2 = -1.1  # precession rate of qubit 2 (negative: precession the other way)
N1 = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
N2 = np.array([-0.3, 0.4, 1.0]) / np.linalg.norm([-0.3, 0.4, 1.0])

SQRT2 = float(np.sqrt(2.0))
SVD_VSTAR = 1 / (1 + 2 * SQRT2)  # 1 / max over states of |a| + |b| + ||T||_1
LINEAR_VSTAR = 0.25  # 1 / max over states and points of -(2a.l1 + 2b.l2 + 4 l1^T T l2)


# --- Hamiltonians ---------------------------------------------------------------------------


def heisenberg() -> np.ndarray:
    return quantum.heisenberg(OMEGA)


def noninteracting() -> np.ndarray:
    return quantum.noninteracting(OMEGA1, N1, OMEGA2, N2)


HAMILTONIANS = {"heisenberg": heisenberg, "noninteracting": noninteracting}


def driven(steps: int = 200) -> quantum.TimeDependent:
    """H(t) = cos(t) Heisenberg + sin(2t)/2 sigma_x x 1 + t/2 1 x sigma_z: [H(t), H(s)] != 0."""
    HH = quantum.heisenberg(OMEGA)
    X1 = np.kron(quantum.PAULI[0], np.eye(2))
    Z2 = np.kron(np.eye(2), quantum.PAULI[2])

    def fn(t):
        return jnp.cos(t) * HH + 0.5 * jnp.sin(2 * t) * X1 + 0.5 * t * Z2

    return quantum.TimeDependent(fn, steps)


def rodrigues(axis, angle, v):
    """Rotate v (..., 3) by `angle` about the unit `axis` (right-handed)."""
    axis = jnp.asarray(axis)
    c, s = jnp.cos(angle), jnp.sin(angle)
    return v * c + jnp.cross(axis, v) * s + axis * (v @ axis)[..., None] * (1 - c)


def rotation_matrix(axis, angle) -> jax.Array:
    return rodrigues(axis, angle, jnp.eye(3)).T  # columns: the rotated basis vectors


def rotate(state: Bloch, t) -> Bloch:
    """The exact noninteracting solution: a -> R1 a, b -> R2 b, T -> R1 T R2^T."""
    R1 = rotation_matrix(N1, OMEGA1 * t)
    R2 = rotation_matrix(N2, OMEGA2 * t)
    return Bloch(state.a @ R1.T, state.b @ R2.T, R1 @ state.T @ R2.T)


def rotation_field(omega1=OMEGA1, n1=N1, omega2=OMEGA2, n2=N2):
    """The exact velocity field of `noninteracting()`: V_k(l) = omega_k n_k x l_k, (2, 3)."""
    w = jnp.stack([omega1 * jnp.asarray(n1), omega2 * jnp.asarray(n2)])

    def V(lam):
        return jnp.cross(w, lam)

    return V


# --- named states ---------------------------------------------------------------------------


def maximally_mixed() -> Bloch:
    return Bloch(jnp.zeros(3), jnp.zeros(3), jnp.zeros((3, 3)))


def werner(p: float) -> Bloch:
    """p |psi-><psi-| + (1 - p) 1/4: the singlet has a = b = 0, T = -1."""
    return Bloch(jnp.zeros(3), jnp.zeros(3), -p * jnp.eye(3))


def product(r1, r2) -> Bloch:
    """rho(r1) x rho(r2): T = r1 r2^T."""
    r1, r2 = jnp.asarray(r1, float), jnp.asarray(r2, float)
    return Bloch(r1, r2, jnp.outer(r1, r2))


# --- random material ------------------------------------------------------------------------


def _pool(n: int) -> int:
    return max(64, 1 << (n - 1).bit_length())


def states(seed: int, n: int, visibility: float = 1.0, ensemble: str = "hs") -> Bloch:
    """A batch of n states of S_v from a fixed seed: the first n of a power-of-two batch
    (at least 64), so that the suite draws few distinct shapes (compiling a random
    generator for a new shape costs ~0.3 s of CPU)."""
    pool = quantum.random_states(jax.random.key(seed), _pool(n), visibility, ensemble)
    return jax.tree.map(lambda x: x[:n], pool)


def one(batch: Bloch, i: int) -> Bloch:
    """State i of a batch."""
    return jax.tree.map(lambda x: x[i], batch)


def directions(seed: int, n: int) -> jax.Array:
    """n random unit vectors (n, 3) (the first n of a pool, as for `states`)."""
    x = jax.random.normal(jax.random.key(seed), (_pool(n), 3))[:n]
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def great_circle(x: jax.Array, tau: jax.Array, s) -> jax.Array:
    """The point at arc length s from unit x along the unit tangent tau (same shapes)."""
    return jnp.cos(s) * x + jnp.sin(s) * tau


def within(estimate, exact, k: float = 4.0):
    """Boolean: |mean - exact| <= k stderr (elementwise) for a bell.Estimate."""
    return np.abs(np.asarray(estimate.mean) - np.asarray(exact)) <= k * np.asarray(estimate.stderr)


# --- gauges, shared and compiled once ---------------------------------------------------------


@functools.cache
def gauge(name: str) -> Gauge:
    return get_gauge(name)


@functools.cache
def batched(name: str) -> SimpleNamespace:
    """Jitted functions of a batch of states (S,) and of points (P, 2, 3):
    density (S, P), dpdt (S, P), terms -> (w, dw, grad) (S, P[, 2, 3]), margin (S,)."""
    G = gauge(name)
    per_point = lambda f: jax.vmap(f, in_axes=(None, None, 0))

    def terms(s, ds, lam):
        P, dP = G.prepare_jvp(s, ds)
        return per_point(G.terms)(P, dP, lam)

    return SimpleNamespace(
        density=jax.jit(jax.vmap(jax.vmap(G.density, in_axes=(None, 0)), in_axes=(0, None))),
        dpdt=jax.jit(jax.vmap(per_point(G.dpdt), in_axes=(0, 0, None))),
        terms=jax.jit(jax.vmap(terms, in_axes=(0, 0, None))),
        margin=jax.jit(jax.vmap(G.margin)),
    )


def stack(*states: Bloch) -> Bloch:
    """One batch from single states and batches, in order."""
    batches = [s if s.a.ndim == 2 else jax.tree.map(lambda x: x[None], s) for s in states]
    return jax.tree.map(lambda *x: jnp.concatenate(x), *batches)


# --- exact integration on S^2 x S^2 -----------------------------------------------------------


@functools.cache
def product_quadrature(n: int = 6) -> tuple[jax.Array, jax.Array]:
    """Points (M^2, 2, 3) and weights (M^2,) summing to 1: the product of two copies of
    `harmonics.quadrature(n)`, exact for products of polynomials of degree < 2n per sphere.
    The rule is symmetric under lambda_k -> -lambda_k, so it also integrates |x . l_k| times
    an odd polynomial exactly (to 0): enough for the svd gauge's odd moments."""
    from lhvjax.harmonics import quadrature

    x, w = quadrature(n)
    M = len(x)
    lam = np.stack([np.repeat(x, M, 0), np.tile(x, (M, 1))], 1)
    return jnp.asarray(lam), jnp.asarray(np.outer(w, w).reshape(-1))
