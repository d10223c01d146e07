"""General qubit base model (App. A-B): softmax rule, Wigner action, noninteracting flow.

Tolerances (float64): identities that hold exactly in exact arithmetic to 1e-12 (relative
where the numbers are not O(1)); central finite differences to 1e-8; Monte Carlo checks
within 5 standard errors plus the stated bias bound.
"""

import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lhvjax import basemodel as bm
from lhvjax import bound

EXACT = 1e-12
L_MAXES = [0, 1, 2, 3, 4]
H0 = jnp.array([[0.4, 0.3 - 0.5j], [0.3 + 0.5j, -0.9]])  # h = (0.6, 1.0, 1.3), h_0 = -0.25
GENERATORS_SO3 = jnp.array(  # [e_k]_x: the cross product with e_k, R = exp(theta [e_k]_x)
    [
        [[0, 0, 0], [0, 0, -1], [0, 1, 0]],
        [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
        [[0, -1, 0], [1, 0, 0], [0, 0, 0]],
    ],
    dtype=jnp.float64,
)


# Random inputs come from NumPy with fixed seeds: host-side, so they cost no JAX compilation.


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def haar(seed, shape=()):
    """Haar-random unitaries (*shape, 2, 2): QR of a complex Ginibre matrix, R's phases fixed."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((*shape, 2, 2)) + 1j * rng.standard_normal((*shape, 2, 2))
    Q, R = np.linalg.qr(g)
    d = np.diagonal(R, axis1=-2, axis2=-1)
    return jnp.asarray(Q * (d / np.abs(d))[..., None, :])


def dagger(U):
    return jnp.conj(jnp.swapaxes(U, -1, -2))


def units(seed, shape):
    x = np.random.default_rng(seed).standard_normal((*shape, 3))
    return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True))


def hidden(seed, shape, l_max):
    return normal(seed, (*shape, 2, bm.n_basis(l_max)))


# --- sizes, basis, rotation -----------------------------------------------------------------


def test_dimensions_and_theorem2():
    assert [bm.n_basis(l) for l in L_MAXES] == [1, 4, 9, 16, 25]
    assert [bm.dim(l) for l in L_MAXES] == [2, 8, 18, 32, 50]
    assert bm.l_max_of(jnp.zeros((7, 2, 16))) == 3
    # eq. (18) with D = 2, d = 8 (l_max = 1): 4^N - 1 <= 8N (8N + 1) / 2 holds up to
    # N = 4 (255 <= 528) and fails at N = 5 (1023 > 820)
    assert bound.largest_n(2, bm.dim(1)) == 4
    assert bound.allowed(2, bm.dim(1), 4) and not bound.allowed(2, bm.dim(1), 5)


def test_basis_is_orthonormal_and_degree_one_is_n():
    l_max = 4
    x, w = bm._quadrature(l_max)
    Y = bm.basis(jnp.asarray(x), l_max)
    np.testing.assert_allclose(Y.T @ (w[:, None] * Y), np.eye(25), atol=EXACT)
    n = units(0, (6,))
    np.testing.assert_allclose(
        bm.basis(n, 1)[..., 1:], math.sqrt(3 / (4 * math.pi)) * n, atol=EXACT
    )
    np.testing.assert_allclose(bm.basis(3.7 * n, 2), bm.basis(n, 2), atol=EXACT)  # only n/|n|


def test_rotation_conjugates_pauli_vectors():
    U = haar(1, (8,))
    R = bm.rotation(U)
    np.testing.assert_allclose(
        R @ jnp.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=EXACT
    )
    np.testing.assert_allclose(jnp.linalg.det(R), 1.0, atol=EXACT)
    n = units(2, (8,))
    lhs = U @ jnp.einsum("...k,kab->...ab", n, bm.PAULI) @ dagger(U)  # U (n.sigma) U^dag
    rhs = jnp.einsum("...k,kab->...ab", bm.apply(U, n), bm.PAULI)  # (R_U n).sigma
    np.testing.assert_allclose(lhs, rhs, atol=EXACT)
    np.testing.assert_allclose(bm.rotation(jnp.exp(0.83j) * U), R, atol=EXACT)


# --- Wigner matrices ------------------------------------------------------------------------


def test_wigner_d_agrees_with_e3nn_and_rotates_harmonics():
    l_max, K = 4, 25  # block-diagonal: l_max = 4 holds every smaller cut-off
    U = haar(3, (5,))
    R = bm.rotation(U)
    D = bm.wigner_d(R, l_max)
    np.testing.assert_allclose(bm.wigner_d(U, l_max), D, atol=EXACT)  # U stands for R_U
    for l in (1, 3):  # the cut-off l is the top-left block
        np.testing.assert_allclose(bm.wigner_d(R, l), D[:, : (l + 1) ** 2, : (l + 1) ** 2])
    ref = jax.jit(jax.vmap(e3nn.Irreps.spherical_harmonics(l_max).D_from_matrix))(R)
    np.testing.assert_allclose(D, ref, atol=EXACT)
    n = units(4, (5,))
    Rn = jnp.einsum("...ij,...j->...i", R, n)
    np.testing.assert_allclose(  # B(R n) = D(R) B(n): column action on B
        bm.basis(Rn, l_max), jnp.einsum("...ab,...b->...a", D, bm.basis(n, l_max)), atol=EXACT
    )
    eye = np.broadcast_to(np.eye(K), D.shape)
    np.testing.assert_allclose(D @ jnp.swapaxes(D, -1, -2), eye, atol=EXACT)
    assert np.all(np.asarray(D)[:, ~bm._block_mask(l_max).astype(bool)] == 0.0)


def test_wigner_d_is_differentiable_at_the_identity():
    """d/dtheta D(exp(theta [e_k]_x)) at 0 is the generator J_k (e3nn's `generators`)."""
    l_max = 3
    J = e3nn.Irreps.spherical_harmonics(l_max).generators()
    # R(theta) = 1 + A + A^2 / 2, A = sum_k theta_k [e_k]_x, matches exp(A) to second order,
    # so its first derivative at 0 is that of the rotation (and it costs no expm)
    A = lambda th: jnp.einsum("k,kij->ij", th, GENERATORS_SO3)
    R = lambda th: jnp.eye(3) + A(th) + A(th) @ A(th) / 2
    dD = jax.jacfwd(lambda th: bm.wigner_d(R(th), l_max))(jnp.zeros(3))  # (K, K, 3)
    np.testing.assert_allclose(jnp.moveaxis(dD, -1, 0), J, atol=EXACT)
    assert np.min(np.max(np.abs(J), axis=(1, 2))) > 0.5  # a real check: no generator is zero


# --- eq. (22): q(U^dag[n], lambda) = q(n, T_U(lambda)) -----------------------------------------


@pytest.mark.parametrize("l_max", L_MAXES)
def test_measurement_rule_is_covariant(l_max):
    seed = 10 + 3 * l_max
    U, lam, n = haar(seed, (16,)), hidden(seed + 1, (16,), l_max), units(seed + 2, (16,))
    p = bm.q(bm.apply(dagger(U), n), lam)
    np.testing.assert_allclose(bm.q(n, bm.act(U, lam)), p, atol=EXACT)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=EXACT)
    if l_max >= 1:  # the measurement moved: without T_U the probabilities differ
        assert np.max(np.abs(bm.q(n, lam) - p)) > 1e-2


def test_group_action():
    l_max = 3
    U1, U2, lam = haar(30), haar(31), hidden(32, (4,), l_max)
    T12 = bm.act(U1 @ U2, lam)
    np.testing.assert_allclose(T12, bm.act(U1, bm.act(U2, lam)), atol=EXACT)  # T_U1 o T_U2
    assert np.max(np.abs(T12 - bm.act(U2, bm.act(U1, lam)))) > 1e-2  # order matters
    np.testing.assert_allclose(bm.act(jnp.eye(2, dtype=complex), lam), lam, atol=EXACT)
    np.testing.assert_allclose(bm.act(dagger(U1), bm.act(U1, lam)), lam, atol=EXACT)
    np.testing.assert_allclose(bm.act(jnp.exp(-2.1j) * U1, lam), bm.act(U1, lam), atol=EXACT)
    # T_U is orthogonal on Lambda_1: it preserves the Frobenius norm of each lambda
    np.testing.assert_allclose(
        jnp.linalg.norm(bm.act(U1, lam), axis=(-2, -1)),
        jnp.linalg.norm(lam, axis=(-2, -1)),
        rtol=EXACT,
    )


def test_covariance_in_float32(f32):
    U = haar(33, (8,)).astype(jnp.complex64)
    lam, n = hidden(34, (8,), 2).astype(jnp.float32), units(35, (8,)).astype(jnp.float32)
    assert lam.dtype == jnp.float32
    lhs, rhs = bm.q(n, bm.act(U, lam)), bm.q(bm.apply(dagger(U), n), lam)
    assert lhs.dtype == jnp.float32
    np.testing.assert_allclose(lhs, rhs, atol=1e-5)


# --- noninteracting dynamics ----------------------------------------------------------------


def test_velocity_is_the_generator_of_the_flow():
    l_max = 3
    lam = hidden(40, (), l_max)
    G = bm.generator(H0, l_max)
    np.testing.assert_allclose(G, -G.T, atol=EXACT)  # antisymmetric: div V = 2 tr G = 0
    assert np.all(np.asarray(G)[~bm._block_mask(l_max).astype(bool)] == 0.0)
    V = bm.velocity(H0, lam)
    _, jvp = jax.jvp(lambda t: bm.flow(H0, t, lam), (0.0,), (1.0,))
    np.testing.assert_allclose(jvp, V, atol=EXACT)
    eps = 1e-5  # central difference: truncation ~ eps^2 |h|^3 |lam|, rounding ~ 1e-16 / eps
    fd = (bm.flow(H0, eps, lam) - bm.flow(H0, -eps, lam)) / (2 * eps)
    np.testing.assert_allclose(fd, V, atol=1e-8)
    # an autonomous flow: d/dt T_U(t)(lambda) = V(T_U(t)(lambda)) at every t, and
    # T_U(t)(lambda) = lambda exp(t G)
    t = 0.7
    lam_t, dlam = jax.jvp(lambda s: bm.flow(H0, s, lam), (t,), (1.0,))
    np.testing.assert_allclose(dlam, bm.velocity(H0, lam_t), atol=EXACT)
    np.testing.assert_allclose(lam_t, lam @ scipy.linalg.expm(t * np.asarray(G)), atol=EXACT)
    np.testing.assert_allclose(bm.propagator(H0, t), scipy.linalg.expm(-1j * t * H0), atol=EXACT)
    # h_0 (the trace of H) is a global phase: it does not move lambda
    np.testing.assert_allclose(bm.velocity(H0 + 0.8 * jnp.eye(2), lam), V, atol=EXACT)


def _gaussian(l_max):
    """A non-isotropic Gaussian p_0 on Lambda_1 = R^(2K) (no rotation leaves it fixed)."""
    d = bm.dim(l_max)
    mean = normal(50, (d,))
    A = normal(51, (d, d)) / math.sqrt(d)
    cov = A @ A.T + 0.5 * jnp.eye(d)
    prec = jnp.linalg.inv(cov)
    logz = 0.5 * (d * math.log(2 * math.pi) + jnp.linalg.slogdet(cov)[1])

    def logp(lam):
        z = lam.reshape(-1) - mean
        return -0.5 * z @ prec @ z - logz

    return mean, A, logp


def test_pushforward_solves_the_continuity_equation():
    """p_t(lambda) = p_0(T_U(t)^dag(lambda)) solves d/dt p + div(p V) = 0 for V = lambda G.

    dp/dt by a JVP in t, div(p V) by the trace of the Jacobian of the flux (jacfwd); the
    residual vanishes to rounding, relative to |dp/dt|. A field for another Hamiltonian
    leaves a residual of the size of dp/dt (the check can fail).
    """
    l_max = 2
    mean, A, logp0 = _gaussian(l_max)
    p0 = lambda lam: jnp.exp(logp0(lam))
    p = lambda t, lam: p0(bm.flow(H0, -t, lam))  # T_U(t)^-1 = T_U(-t); |det| = 1
    t = 0.4
    # points where p_t is not small: samples of p_0 moved to time t
    z = normal(52, (6, bm.dim(l_max)))
    pts = bm.flow(H0, t, (mean + z @ A.T).reshape(6, 2, bm.n_basis(l_max)))

    def residual(lam, H):
        dp = jax.jvp(lambda s: p(s, lam), (t,), (1.0,))[1]
        flux = lambda x: p(t, x) * bm.velocity(H, x)
        div = jnp.trace(jax.jacfwd(flux)(lam).reshape(lam.size, lam.size))
        return dp + div, dp

    residuals = jax.jit(jax.vmap(residual, (0, None)))
    r, dp = residuals(pts, H0)
    assert np.max(np.abs(dp)) > 1e-3 * np.max(jax.vmap(lambda x: p(t, x))(pts))
    np.testing.assert_array_less(np.abs(r), EXACT * np.max(np.abs(dp)))
    # div V = 0 by itself (trace of an antisymmetric G on each row)
    divV = jnp.trace(jax.jacfwd(lambda x: bm.velocity(H0, x))(pts[0]).reshape(18, 18))
    assert abs(float(divV)) < EXACT
    r_wrong, _ = residuals(pts, -H0)
    assert np.max(np.abs(r_wrong)) > 0.1 * np.max(np.abs(dp))


def test_statistics_transform_sample_by_sample():
    """E_{p_0}[q(n, T_U lambda)] = E_{p_0}[q(U^dag[n], lambda)], term by term."""
    l_max = 2
    mean, A, _ = _gaussian(l_max)
    z = normal(60, (4096, bm.dim(l_max)))
    lam = (mean + z @ A.T).reshape(-1, 2, bm.n_basis(l_max))
    U = haar(61)
    n = units(62, (3,))[:, None]  # 3 directions x 4096 samples
    moved = bm.q(n, bm.act(U, lam))[..., 0]
    pulled = bm.q(bm.apply(dagger(U), n), lam)[..., 0]
    np.testing.assert_allclose(moved, pulled, atol=EXACT)
    # and the evolution is visible: the mean moved by many standard errors
    before = bm.q(n, lam)[..., 0]
    diff = moved - before
    se = diff.std(-1) / math.sqrt(diff.shape[-1])
    assert np.max(np.abs(diff.mean(-1)) / se) > 20


# --- Bell's rule as a limit -----------------------------------------------------------------


def test_bell_rule_is_the_large_scale_limit():
    r = units(70, (1,))[0]
    n = units(71, (200,))
    x = n @ r
    for s in (5.0, 50.0, 500.0):
        up = bm.q(n, bm.bell(r, s, l_max=2))[:, 0]
        np.testing.assert_allclose(up, jax.nn.sigmoid(s * x), atol=EXACT)
        # |sigmoid(s x) - Theta(x)| = sigmoid(-s |x|) <= exp(-s |x|)
        np.testing.assert_array_less(np.abs(up - (x > 0)), np.exp(-s * np.abs(x)) + EXACT)
    U = haar(72)
    np.testing.assert_allclose(  # T_U moves Bell's lambda like the Bloch vector: r -> R_U r
        bm.act(U, bm.bell(r, 50.0)), bm.bell(bm.rotation(U) @ r, 50.0), atol=1e-10
    )


def test_bell_embedding_follows_the_quantum_state():
    """lambda = bell(r^, s) with r^ from eq. (30) gives q(up | n) -> (1 + n.a) / 2; moving the
    samples with T_U gives (1 + n.R_U a) / 2, the statistics of U rho U^dag."""
    a = jnp.array([0.3, -0.4, 0.5])
    ra = jnp.linalg.norm(a)
    m, s = 40_000, 2000.0
    g = units(80, (m,))
    # eq. (30): mixture of uniform (weight 1 - |a|) and the cosine lobe around a^ (weight
    # |a|); normalize(a^ + g), g uniform, has density max(a^ . x, 0) / pi
    lobe = a / ra + units(81, (m,))
    lobe = lobe / jnp.linalg.norm(lobe, axis=-1, keepdims=True)
    rhat = jnp.where(np.random.default_rng(82).random((m, 1)) < ra, lobe, g)
    lam = bm.bell(rhat, s)
    U = haar(83)
    Ra = bm.rotation(U) @ a
    n = jnp.stack([Ra / jnp.linalg.norm(Ra), jnp.array([1.0, 0, 0]), jnp.array([0, 0.6, -0.8])])
    up = bm.q(n[:, None], bm.act(U, lam))[..., 0]  # (3 directions, m samples)
    se = up.std(-1) / math.sqrt(m)
    # finite scale: x = n . r^ has a density <= (1 + 3|a|) / 2 <= 2 on [-1, 1], and
    # int |sigmoid(s x) - Theta(x)| dx = 2 ln 2 / s
    bias = 4 * math.log(2) / s
    quantum = (1 + n @ Ra) / 2
    np.testing.assert_array_less(np.abs(up.mean(-1) - quantum), 5 * se + bias)
    wrong = (1 + n @ (bm.rotation(U).T @ a)) / 2  # the inverse rotation: rejected
    assert np.max(np.abs(up.mean(-1) - wrong) / (5 * se + bias)) > 3


# --- errors ---------------------------------------------------------------------------------


def test_clear_errors():
    n = jnp.array([0.0, 0.0, 1.0])
    for bad in [jnp.zeros((3, 4)), jnp.zeros((2, 5)), jnp.zeros(4)]:
        with pytest.raises(ValueError, match=r"\(\.\.\., 2, \(l_max \+ 1\)\^2\)"):
            bm.q(n, bad)
    with pytest.raises(ValueError, match="not unitary"):
        bm.act(jnp.array([[1.0, 0.1], [0.0, 1.0]]), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, 2\)"):
        bm.rotation(jnp.eye(3))
    with pytest.raises(ValueError, match="measurement direction"):
        bm.q(jnp.zeros(2), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="rotation"):
        bm.wigner_d(jnp.eye(4), 1)
    with pytest.raises(ValueError, match="SO\\(3\\)"):
        bm.wigner_d(-jnp.eye(3), 1)  # improper: B(-n) = parity, not a rotation
    with pytest.raises(ValueError, match="not Hermitian"):
        bm.generator(jnp.array([[0.0, 1.0], [0.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="l_max >= 1"):
        bm.bell(n, 1.0, l_max=0)
    with pytest.raises(ValueError, match="integer >= 0"):
        bm.n_basis(-1)
