"""General LHV base models for projective qubit measurements (paper App. A and B).

Measurement rule (App. A, eq. 21)
    A projective qubit measurement x is a direction n on S^2 with two outcomes (up,
    down), so Delta = 2. Its features are the real spherical harmonics of n,

        B(n) = (Y_00(n), Y_1,-1(n), ..., Y_lmax,lmax(n)) in R^K,    K = (l_max + 1)^2,

    orthonormal on S^2 (e3nn-jax, "integral" normalisation; the degree-1 block is
    sqrt(3 / 4 pi) (n_x, n_y, n_z)). The hidden variable is a real matrix lambda in
    Lambda_1 = R^(2 x K), row a holding the coefficients of outcome a, and

        q(. | n, lambda) = softmax(lambda B(n))        (over the two outcomes).

    Any finite-outcome model (Lambda_rho, q_rho) fits this form: write q_rho =
    softmax(f_rho), expand f_rho(n, lambda) in the B_k(n), and use the coefficient matrix
    as the new hidden variable (the distribution is pushed forward with it). The cut-off
    l_max is the only approximation. Outcome probabilities that are exactly 0 or 1 need
    infinite logits: the Bell model's rule Theta(n . r) is reached only as a limit
    (`bell`, with q(up) = sigmoid(scale n . r)). The softmax ignores a row added to both
    outcomes, so only lambda_up - lambda_down matters: the essential dimension is K.

Unitaries (App. B, eq. 22-24)
    U acts on directions through its rotation R_U in SO(3), U (n.sigma) U^dag =
    (R_U n).sigma, with (R_U)_ij = tr(sigma_i U sigma_j U^dag) / 2; so U[n] = R_U n and
    U^dag[n] = R_U^T n. Rotating the argument of a harmonic stays within its degree:
    B(R n) = D(R) B(n), D block-diagonal and orthogonal (the real Wigner matrices). Then
    lambda B(U^dag[n]) = lambda D(R_U^T) B(n), which gives

        q(U^dag[n], lambda) = q(n, T_U(lambda)),      T_U(lambda) = lambda D(R_U^T),

    exactly, for every l_max (eq. 22, 24). U -> T_U is a left group action,
    T_{U1 U2} = T_{U1} o T_{U2}, T_1 = Id, blind to the global phase of U. A state
    rho -> U rho U^dag is followed by moving every hidden variable with T_U: since
    P(n | U rho U^dag) = P(U^dag[n] | rho), the statistics come out right for every rho
    the model describes (eq. 11-14).

Noninteracting dynamics (eq. 13-14)
    For a qubit Hamiltonian H = h_0 1 + h.sigma / 2 (h_k = tr(H sigma_k)), U(t) = exp(-iHt)
    rotates Bloch vectors by R(t) = exp(t [h]_x), and t -> T_{U(t)} is the flow of the
    linear velocity field

        V(lambda) = lambda G,      G = -sum_k h_k J_k,

    with J_k the generators of the D representation, D(exp(theta [e_k]_x)) = exp(theta J_k).
    G is antisymmetric, so div V = 2 tr G = 0 and the flow preserves volume: a density p_0
    on Lambda_1 moves as p_t(lambda) = p_0(T_{U(t)^dag}(lambda)).

Theorem 2
    dim Lambda_1 = d = 2 K = 2 (l_max + 1)^2 (`dim`); `lhvjax.bound.largest_n(2, dim(l_max))`
    is the largest number of qubits for which eq. (18) allows a smooth microscopic
    action of all unitaries on Lambda_1^N. The construction here only gives the local
    (noninteracting) part: U(2) acts through SO(3), N copies need N (D^2 - 1) = 3N dimensions.

Wigner matrices
    `wigner_d` computes D(R)_ab = int Y_a(R x) Y_b(x) dx with a quadrature exact for
    degree 2 l_max (Gauss-Legendre in cos(theta) times a uniform grid in phi), so D is a
    polynomial in R: smooth everywhere and exact to rounding. It agrees with e3nn-jax's
    `Irreps.D_from_matrix(R)` (a test), which goes through Euler angles instead: its
    derivative at R = 1 comes out as zero (wrong), and near angle pi it keeps only ~1e-10.
"""

from __future__ import annotations

import functools
import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "OUTCOMES",
    "PAULI",
    "n_basis",
    "dim",
    "l_max_of",
    "basis",
    "q",
    "rotation",
    "apply",
    "wigner_d",
    "act",
    "generator",
    "velocity",
    "propagator",
    "flow",
    "bell",
]

OUTCOMES = 2  # Delta: a projective qubit measurement has outcomes up (0) and down (1)
PAULI = np.array(
    [[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=np.complex128
)  # (3, 2, 2)
_NORMALIZATION = "integral"  # orthonormal on S^2, so D(R) is orthogonal


# --- sizes and shapes -----------------------------------------------------------------------


def _check_l_max(l_max) -> int:
    if int(l_max) != l_max or l_max < 0:
        raise ValueError(f"l_max must be an integer >= 0; got {l_max!r}")
    return int(l_max)


def n_basis(l_max: int) -> int:
    """K = (l_max + 1)^2: the number of real spherical harmonics of degree <= l_max."""
    return (_check_l_max(l_max) + 1) ** 2


def dim(l_max: int) -> int:
    """d = dim Lambda_1 = Delta K = 2 (l_max + 1)^2, the d of Theorem 2 (eq. 18)."""
    return OUTCOMES * n_basis(l_max)


def l_max_of(lam) -> int:
    """The cut-off of a hidden variable lambda (..., 2, K); an error unless K = (l_max + 1)^2."""
    shape = jnp.shape(lam)
    K = shape[-1] if len(shape) >= 2 else -1
    l_max = math.isqrt(K) - 1 if K > 0 else -1
    if len(shape) < 2 or shape[-2] != OUTCOMES or l_max < 0 or (l_max + 1) ** 2 != K:
        raise ValueError(
            f"a hidden variable lambda is a (..., 2, (l_max + 1)^2) real array (one row of "
            f"harmonic coefficients per outcome, e.g. (2, 4) for l_max = 1); got shape {shape}"
        )
    return l_max


def _check_direction(n) -> None:
    if jnp.shape(n)[-1:] != (3,):
        raise ValueError(f"a measurement direction n is a (..., 3) array; got shape {jnp.shape(n)}")


def _concrete(x):
    """x as a NumPy array, or None inside jit/grad (where values cannot be checked)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _tolerance(x) -> float:
    # sqrt(eps) of the working precision: 1.5e-8 in float64, 3.5e-4 in float32
    return float(np.sqrt(np.finfo(np.result_type(x.dtype, np.float32)).eps))


def _check_unitary(U) -> None:
    if jnp.shape(U)[-2:] != (2, 2):
        raise ValueError(f"a qubit unitary is a (..., 2, 2) matrix; got shape {jnp.shape(U)}")
    u = _concrete(U)
    if u is None:
        return
    err = np.max(np.abs(u @ np.swapaxes(u.conj(), -1, -2) - np.eye(2)), initial=0.0)
    if err > _tolerance(u):
        raise ValueError(
            f"U is not unitary (max |U U^dag - 1| = {err:.3g}); pass a unitary, e.g. "
            f"scipy.linalg.expm(-1j * t * H) for a Hermitian H, or orthonormalise it (QR)"
        )


def _check_rotation(R) -> None:
    r = _concrete(R)
    if r is None:
        return
    err = np.max(np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)), initial=0.0)
    if err > _tolerance(r) or np.any(np.linalg.det(r) < 0):
        raise ValueError(
            f"R is not a rotation in SO(3) (max |R R^T - 1| = {err:.3g}, or det R = -1); "
            f"pass an orthogonal matrix with det +1, e.g. basemodel.rotation(U)"
        )


def _check_hermitian(H) -> None:
    if jnp.shape(H) != (2, 2):
        raise ValueError(f"a qubit Hamiltonian is a 2x2 matrix; got shape {jnp.shape(H)}")
    h = _concrete(H)
    if h is None:
        return
    err = np.max(np.abs(h - h.conj().T))
    if err > _tolerance(h) * max(1.0, np.max(np.abs(h))):
        raise ValueError(f"H is not Hermitian (max |H - H^dag| = {err:.3g})")


# --- the measurement rule -------------------------------------------------------------------


# The kernels are jitted (l_max static): e3nn's harmonics are many small operations, slow
# to dispatch one by one. The public functions check shapes and values first.


@functools.partial(jax.jit, static_argnums=1)
def _basis(n, l_max):
    ls = list(range(l_max + 1))
    return e3nn.sh(ls, n, normalize=True, normalization=_NORMALIZATION)


def basis(n: jax.Array, l_max: int) -> jax.Array:
    """B(n) (..., K): real orthonormal spherical harmonics of n/|n|, degrees 0..l_max."""
    _check_direction(n)
    return _basis(jnp.asarray(n), _check_l_max(l_max))


@jax.jit
def _q(n, lam):
    B = _basis(n, math.isqrt(lam.shape[-1]) - 1)
    logits = jnp.matmul(lam, B[..., None])[..., 0]
    return jax.nn.softmax(logits, axis=-1)


def q(n: jax.Array, lam: jax.Array) -> jax.Array:
    """Outcome probabilities (..., 2) = softmax(lambda B(n)): [q(up), q(down)] (eq. 21).

    n (..., 3) and lambda (..., 2, K) broadcast against each other.
    """
    l_max_of(lam)
    _check_direction(n)
    return _q(jnp.asarray(n), jnp.asarray(lam))


def bell(r: jax.Array, scale, l_max: int = 1) -> jax.Array:
    """The lambda (..., 2, K) with q(up | n) = sigmoid(scale n . r): Bell's rule
    Theta(n . r) (Lambda_1 = S^2) as scale -> infinity, for a unit r (..., 3).

    Only the degree-1 coefficients of the up row are nonzero; it needs l_max >= 1.
    """
    _check_direction(r)
    if _check_l_max(l_max) < 1:
        raise ValueError(f"Bell's rule n . r has degree 1; it needs l_max >= 1, got {l_max}")
    r = jnp.asarray(r)
    y1 = math.sqrt(3 / (4 * math.pi))  # Y_1m(n) = y1 n_m ("integral" normalisation)
    lam = jnp.zeros((*r.shape[:-1], OUTCOMES, n_basis(l_max)), r.dtype)
    return lam.at[..., 0, 1:4].set(jnp.asarray(scale, r.dtype)[..., None] * r / y1)


# --- unitaries ------------------------------------------------------------------------------


def rotation(U: jax.Array) -> jax.Array:
    """R_U (..., 3, 3) in SO(3): (R_U)_ij = tr(sigma_i U sigma_j U^dag) / 2, so that
    U (n.sigma) U^dag = (R_U n).sigma. The global phase of U drops out."""
    _check_unitary(U)
    return _rotation(jnp.asarray(U))


@jax.jit
def _rotation(U):
    Ud = jnp.conj(jnp.swapaxes(U, -1, -2))
    R = jnp.einsum("iab,...bc,jcd,...da->...ij", PAULI, U, PAULI, Ud) / 2
    return jnp.real(R)


def apply(U: jax.Array, n: jax.Array) -> jax.Array:
    """U[n] = R_U n: the measurement direction n moved by U, U (n.sigma) U^dag = (R_U n).sigma.

    The Heisenberg-picture measurement of eq. (11) is U^dag[n] = apply(U^dag, n) = R_U^T n.
    """
    _check_direction(n)
    return jnp.einsum("...ij,...j->...i", rotation(U), n)


@functools.cache
def _quadrature(l_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (P, 3) and weights (P,) integrating polynomials of degree <= 2 l_max on S^2
    exactly: Gauss-Legendre in z (l_max + 1 nodes) times 2 l_max + 1 equally spaced phi."""
    z, wz = np.polynomial.legendre.leggauss(l_max + 1)
    m = 2 * l_max + 1
    phi = 2 * np.pi * np.arange(m) / m
    zz, pp = np.repeat(z, m), np.tile(phi, l_max + 1)
    s = np.sqrt(1 - zz**2)
    x = np.stack([s * np.cos(pp), s * np.sin(pp), zz], axis=-1)
    return x, np.repeat(wz, m) * (2 * np.pi / m)


@functools.cache
def _block_mask(l_max: int) -> np.ndarray:
    deg = np.concatenate([np.full(2 * l + 1, l) for l in range(l_max + 1)])
    return (deg[:, None] == deg[None, :]).astype(np.float64)


def wigner_d(g: jax.Array, l_max: int) -> jax.Array:
    """D(R) (..., K, K): the real Wigner matrices of degrees 0..l_max, block-diagonal and
    orthogonal, with B(R n) = D(R) B(n). g is a rotation R (..., 3, 3) or a qubit unitary
    U (..., 2, 2), which stands for R_U.

    D(R)_ab = int Y_a(R x) Y_b(x) dx by an exact quadrature (module doc): a polynomial in R,
    so it is smooth and differentiable everywhere, the identity included.
    """
    l_max = _check_l_max(l_max)
    if jnp.shape(g)[-2:] == (2, 2):
        R = rotation(g)
    elif jnp.shape(g)[-2:] == (3, 3):
        R = jnp.asarray(g)
        _check_rotation(R)
    else:
        raise ValueError(
            f"wigner_d needs a rotation (..., 3, 3) or a qubit unitary (..., 2, 2); "
            f"got shape {jnp.shape(g)}"
        )
    return _wigner(R, l_max)


@functools.partial(jax.jit, static_argnums=1)
def _wigner(R, l_max):
    x, w = _quadrature(l_max)
    x = jnp.asarray(x, R.dtype)
    Y = _basis(x, l_max)  # (P, K)
    YR = _basis(jnp.einsum("...ij,pj->...pi", R, x), l_max)  # Y(R x_p), (..., P, K)
    D = jnp.einsum("...pa,p,pb->...ab", YR, jnp.asarray(w, R.dtype), Y)
    return D * jnp.asarray(_block_mask(l_max), D.dtype)  # exact zeros between degrees


def act(U: jax.Array, lam: jax.Array) -> jax.Array:
    """T_U(lambda) = lambda D(R_U^T) (eq. 24), so that q(U^dag[n], lambda) = q(n, T_U(lambda)).

    A left action: act(U1 @ U2, lam) = act(U1, act(U2, lam)); U and lambda broadcast.
    """
    l_max_of(lam)
    _check_unitary(U)
    return _act(jnp.asarray(U), jnp.asarray(lam))


@jax.jit
def _act(U, lam):
    R = _rotation(U)
    return jnp.matmul(lam, _wigner(jnp.swapaxes(R, -1, -2), math.isqrt(lam.shape[-1]) - 1))


# --- noninteracting dynamics ----------------------------------------------------------------


def generator(H: jax.Array, l_max: int) -> jax.Array:
    """G (K, K), real antisymmetric and block-diagonal, with d/dt T_{exp(-iHt)}(lambda) =
    T_{exp(-iHt)}(lambda) G: G = -sum_k h_k J_k for H = h_0 1 + h.sigma / 2 (module doc)."""
    _check_hermitian(H)
    l_max = _check_l_max(l_max)
    h = jnp.real(jnp.einsum("kab,ba->k", PAULI, H))  # h_k = tr(H sigma_k)
    J = e3nn.Irreps.spherical_harmonics(l_max).generators()  # (3, K, K)
    return -jnp.einsum("k,kab->ab", h, J.astype(h.dtype))


def velocity(H: jax.Array, lam: jax.Array) -> jax.Array:
    """V(lambda) = lambda G: the state-independent velocity field on Lambda_1 whose flow is
    t -> T_{exp(-iHt)} (eq. 13-14). Linear, with div V = 0."""
    return jnp.matmul(lam, generator(H, l_max_of(lam)))


def propagator(H: jax.Array, t) -> jax.Array:
    """U(t) = exp(-iHt) for a 2x2 Hermitian H = h_0 1 + h.sigma / 2, in closed form:
    e^(-i h_0 t) (cos(|h| t / 2) 1 - i sin(|h| t / 2) h^.sigma). Differentiable in t."""
    _check_hermitian(H)
    return _propagator(jnp.asarray(H), t)


@jax.jit
def _propagator(H, t):
    h0 = jnp.real(jnp.trace(H)) / 2
    h = jnp.real(jnp.einsum("kab,ba->k", PAULI, H))
    w = jnp.linalg.norm(h)
    w_safe = jnp.where(w > 0, w, 1.0)  # H = h_0 1: U = e^(-i h_0 t) 1, and no 0 / 0 in grads
    s = jnp.where(w > 0, jnp.sin(w * t / 2) / w_safe, t / 2)  # sin(|h| t / 2) / |h|
    hs = jnp.einsum("k,kab->ab", h, PAULI)
    return jnp.exp(-1j * h0 * t) * (jnp.cos(w * t / 2) * jnp.eye(2) - 1j * s * hs)


def flow(H: jax.Array, t, lam: jax.Array) -> jax.Array:
    """T_{U(t)}(lambda) with U(t) = exp(-iHt): the hidden variable after time t."""
    return act(propagator(H, t), lam)
