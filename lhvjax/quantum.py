"""Two-qubit states, Hamiltonians and their exact evolution (paper eq. 10, 31, 36).

A two-qubit state is held in Bloch (Pauli) coordinates, eq. (31):

    rho(a, b, T) = 1/4 (1x1 + a.sigma x 1 + 1 x b.sigma + sum_jk T_jk sigma_j x sigma_k),

with a_j = tr(rho sigma_j x 1), b_k = tr(rho 1 x sigma_k), T_jk = tr(rho sigma_j x sigma_k).
`Bloch` is a pytree, so batches of states are `Bloch` with leading axes and every
function here is jittable and vmappable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Bloch",
    "PAULI",
    "to_density",
    "from_density",
    "random_states",
    "heisenberg",
    "xxz",
    "noninteracting",
    "hermitian",
    "TimeDependent",
    "vn_derivative",
    "bloch_derivative",
    "heisenberg_bloch_derivative",
    "evolve",
    "propagator",
]

_I2 = np.eye(2, dtype=np.complex128)
_SX = np.array([[0, 1], [1, 0]], dtype=np.complex128)
_SY = np.array([[0, -1j], [1j, 0]], dtype=np.complex128)
_SZ = np.array([[1, 0], [0, -1]], dtype=np.complex128)
PAULI = np.stack([_SX, _SY, _SZ])  # (3, 2, 2)
_SIGMA_A = np.stack([np.kron(s, _I2) for s in PAULI])  # sigma_j x 1
_SIGMA_B = np.stack([np.kron(_I2, s) for s in PAULI])  # 1 x sigma_k
_SIGMA_T = np.stack([[np.kron(s, r) for r in PAULI] for s in PAULI])  # sigma_j x sigma_k


class Bloch(NamedTuple):
    """Two-qubit Bloch coordinates: a (..., 3), b (..., 3), T (..., 3, 3)."""

    a: jax.Array
    b: jax.Array
    T: jax.Array

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.a.shape[:-1]

    def scale(self, v) -> Bloch:
        """The state v * rho + (1 - v) 1/4: every Bloch coordinate times v."""
        return Bloch(v * self.a, v * self.b, v * self.T)

    def flat(self) -> jax.Array:
        """The 15 coordinates (a, b, vec T) as one vector (..., 15)."""
        T = self.T.reshape(*self.T.shape[:-2], 9)
        return jnp.concatenate([self.a, self.b, T], axis=-1)


def _check_bloch(state: Bloch) -> None:
    if state.a.shape[-1:] != (3,) or state.b.shape[-1:] != (3,) or state.T.shape[-2:] != (3, 3):
        raise ValueError(
            f"Bloch state needs a (..., 3), b (..., 3), T (..., 3, 3); got a {state.a.shape}, "
            f"b {state.b.shape}, T {state.T.shape}"
        )


def _check_square4(name: str, m) -> None:
    if jnp.shape(m)[-2:] != (4, 4):
        raise ValueError(f"{name} must be a (..., 4, 4) matrix on two qubits; got {jnp.shape(m)}")


def to_density(state: Bloch) -> jax.Array:
    """rho (..., 4, 4) from Bloch coordinates, eq. (31)."""
    _check_bloch(state)
    eye = jnp.eye(4, dtype=jnp.result_type(state.a.dtype, jnp.complex64))
    rho = eye + jnp.einsum("...j,jxy->...xy", state.a, _SIGMA_A)
    rho = rho + jnp.einsum("...k,kxy->...xy", state.b, _SIGMA_B)
    rho = rho + jnp.einsum("...jk,jkxy->...xy", state.T, _SIGMA_T)
    return rho / 4


def from_density(rho: jax.Array) -> Bloch:
    """Bloch coordinates of rho (..., 4, 4): expectation values of the Pauli products."""
    _check_square4("rho", rho)

    a = jnp.real(jnp.einsum("jyx,...xy->...j", _SIGMA_A, rho))
    b = jnp.real(jnp.einsum("kyx,...xy->...k", _SIGMA_B, rho))
    T = jnp.real(jnp.einsum("jkyx,...xy->...jk", _SIGMA_T, rho))
    return Bloch(a, b, T)


# --- random states of S_v ------------------------------------------------------------------


def _ginibre(key, shape, dtype):
    kr, ki = jax.random.split(key)
    re = jax.random.normal(kr, shape, dtype)
    im = jax.random.normal(ki, shape, dtype)
    return (re + 1j * im) / np.sqrt(2.0)


def random_states(key, n: int, visibility: float = 1.0, ensemble: str = "hs", dtype=None) -> Bloch:
    """n states v sigma + (1 - v) 1/4 of the noisy ball S_v, eq. (10).

    sigma is drawn from a full-rank ensemble, so that T has distinct singular values
    with probability one (DESIGN section 2):
      * "hs": Hilbert-Schmidt, sigma = G G^dag / tr(G G^dag), G a 4x4 complex Ginibre matrix;
      * "bures": sigma proportional to (1 + U) G G^dag (1 + U^dag), U Haar unitary.
      * "pure": sigma = |psi><psi| with psi Haar random. Its T always has a degenerate
        pair of singular values, so the svd gauge refuses it; it exists for the linear gauge.
    """
    dtype = dtype or jnp.zeros(()).dtype
    if ensemble not in ("hs", "bures", "pure"):
        raise ValueError(f"unknown ensemble {ensemble!r}; choose 'hs', 'bures' or 'pure'")
    if not 0.0 <= float(visibility) <= 1.0:
        raise ValueError(f"visibility must lie in [0, 1]; got {visibility}")
    kg, ku = jax.random.split(key)
    if ensemble == "pure":
        psi = _ginibre(kg, (n, 4), dtype)
        sigma = jnp.einsum("ni,nj->nij", psi, psi.conj())
    else:
        G = _ginibre(kg, (n, 4, 4), dtype)
        if ensemble == "bures":
            U = _haar_unitary(ku, n, dtype)
            G = (jnp.eye(4) + U) @ G
        sigma = G @ jnp.swapaxes(G.conj(), -1, -2)
    sigma = sigma / jnp.trace(sigma, axis1=-2, axis2=-1)[..., None, None]
    return from_density(sigma).scale(visibility)


def _haar_unitary(key, n, dtype):
    Z = _ginibre(key, (n, 4, 4), dtype)
    Q, R = jnp.linalg.qr(Z)
    d = jnp.diagonal(R, axis1=-2, axis2=-1)
    return Q * (d / jnp.abs(d))[..., None, :]


# --- Hamiltonians ----------------------------------------------------------------------------


def heisenberg(omega: float = 1.0) -> np.ndarray:
    """H = (omega / 4) sum_k sigma_k x sigma_k (the paper's counterexample, App. C)."""
    return omega / 4 * sum(_SIGMA_T[k, k] for k in range(3))


def xxz(omega: float = 1.0, delta: float = 1.0) -> np.ndarray:
    """H = (omega / 4) (sigma_x x sigma_x + sigma_y x sigma_y + delta sigma_z x sigma_z)."""
    return omega / 4 * (_SIGMA_T[0, 0] + _SIGMA_T[1, 1] + delta * _SIGMA_T[2, 2])


def noninteracting(omega1: float, n1, omega2: float, n2) -> np.ndarray:
    """H = 1/2 (omega1 n1.sigma x 1 + omega2 1 x n2.sigma): each Bloch vector precesses,
    a' = omega1 n1 x a, b' = omega2 n2 x b (Theorem 1's setting)."""
    n1 = _unit(n1, "n1")
    n2 = _unit(n2, "n2")
    return 0.5 * (
        omega1 * np.einsum("j,jxy->xy", n1, _SIGMA_A)
        + omega2 * np.einsum("j,jxy->xy", n2, _SIGMA_B)
    )


def hermitian(H) -> np.ndarray:
    """A user-given two-qubit Hamiltonian, checked to be a Hermitian 4x4 matrix."""
    H = np.asarray(H, dtype=np.complex128)
    if H.shape != (4, 4):
        raise ValueError(f"a two-qubit Hamiltonian is a 4x4 matrix; got shape {H.shape}")
    err = np.max(np.abs(H - H.conj().T))
    if err > 1e-10 * max(1.0, np.max(np.abs(H))):
        raise ValueError(f"Hamiltonian is not Hermitian (max |H - H^dag| = {err:.3g})")
    return H


def _unit(n, name):
    n = np.asarray(n, dtype=np.float64)
    if n.shape != (3,) or not np.linalg.norm(n) > 0:
        raise ValueError(f"{name} must be a nonzero 3-vector; got {n!r}")
    return n / np.linalg.norm(n)


class TimeDependent(NamedTuple):
    """A time-dependent Hamiltonian H(t): `fn(t)` returns a 4x4 Hermitian matrix.

    Evolution over [0, t] uses `steps` exponential-midpoint steps (second order in t/steps).
    """

    fn: Callable[[jax.Array], jax.Array]
    steps: int = 200


# --- dynamics --------------------------------------------------------------------------------


def vn_derivative(H, rho: jax.Array) -> jax.Array:
    """The von Neumann equation: d rho / dt = -i [H, rho]."""
    _check_square4("H", H)
    return -1j * (H @ rho - rho @ H)


def bloch_derivative(H, state: Bloch) -> Bloch:
    """(a', b', T') of -i [H, rho]: the map is linear, so this is exact at any state."""
    rho = to_density(state)
    return from_density(vn_derivative(jnp.asarray(H, rho.dtype), rho))


def _axial(A: jax.Array) -> jax.Array:
    """z(A) with z x v = A v, for the antisymmetric part of A."""
    return jnp.stack([A[..., 2, 1], A[..., 0, 2], A[..., 1, 0]], axis=-1)


def _cross_matrix(z: jax.Array) -> jax.Array:
    """A(z) with A(z) v = z x v."""
    zero = jnp.zeros_like(z[..., 0])
    x, y, w = z[..., 0], z[..., 1], z[..., 2]
    rows = [
        jnp.stack([zero, -w, y], -1),
        jnp.stack([w, zero, -x], -1),
        jnp.stack([-y, x, zero], -1),
    ]
    return jnp.stack(rows, -2)


def heisenberg_bloch_derivative(state: Bloch, omega: float = 1.0) -> Bloch:
    """Eq. (36): a' = -b' = omega z((T - T^T)/2), T' = -omega A((a - b)/2)."""
    _check_bloch(state)
    T = state.T
    da = omega * _axial((T - jnp.swapaxes(T, -1, -2)) / 2)
    dT = -omega * _cross_matrix((state.a - state.b) / 2)
    return Bloch(da, -da, dT)


def propagator(H, t) -> jax.Array:
    """U(t) = exp(-i H t) for a constant H, by its eigendecomposition (exact)."""
    H = jnp.asarray(H)
    _check_square4("H", H)
    E, W = jnp.linalg.eigh(H)
    phase = jnp.exp(-1j * E * jnp.asarray(t)[..., None])
    return (W * phase[..., None, :]) @ jnp.swapaxes(W.conj(), -1, -2)


def _td_propagator(H: TimeDependent, t, t0=0.0) -> jax.Array:
    n = max(1, int(H.steps))  # a fixed count keeps shapes static under jit
    dt = (t - t0) / n

    def factor(k):
        return propagator(H.fn(t0 + (k + 0.5) * dt), dt)

    # the first factor fixes the carry's dtype (whatever dtypes t and H.fn(t) have)
    U1 = factor(0)

    def step(U, k):
        return (factor(k) @ U).astype(U.dtype), None

    U, _ = jax.lax.scan(step, U1, jnp.arange(1, n))
    return U


def evolve(H, state: Bloch, t) -> Bloch:
    """rho(t) = U(t) rho U(t)^dag in Bloch coordinates; H constant (4x4) or `TimeDependent`.

    For a `TimeDependent` H the propagator is a product of `H.steps` midpoint exponentials.
    """
    rho = to_density(state)
    if isinstance(H, TimeDependent):
        U = jnp.vectorize(lambda s: _td_propagator(H, s), signature="()->(i,j)")(jnp.asarray(t))
    else:
        U = propagator(jnp.asarray(H, rho.dtype), t)
    rho_t = U @ rho @ jnp.swapaxes(U.conj(), -1, -2)
    return from_density(rho_t)
