"""Two-qubit states, Hamiltonians and evolution (lhvjax.quantum), float64 unless stated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import systems
from scipy.stats import ks_2samp

from lhvjax import quantum as q
from lhvjax.quantum import Bloch

X, Y, Z = q.PAULI
N = 64  # states per batch: one shape throughout keeps JAX's per-operation compilations shared
I2 = np.eye(2)


def close(x: Bloch, y: Bloch, atol):
    for u, v in zip(x, y, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=atol)


def random_bloch(seed, n):
    """Arbitrary (not necessarily physical) coordinates: the derivative maps are linear."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return Bloch(
        jax.random.normal(k1, (n, 3)),
        jax.random.normal(k2, (n, 3)),
        jax.random.normal(k3, (n, 3, 3)),
    )


def eigs(state: Bloch):
    return np.linalg.eigvalsh(np.asarray(q.to_density(state)))


# --- coordinates ----------------------------------------------------------------------------


def test_round_trip_and_conventions():
    s = systems.states(0, N, 0.8)
    close(q.from_density(q.to_density(s)), s, 1e-14)
    rho = q.to_density(s)
    np.testing.assert_allclose(q.to_density(q.from_density(rho)), rho, atol=1e-14)
    # a belongs to qubit 1, b to qubit 2, T_jk to sigma_j x sigma_k: a product state is a kron
    r1, r2 = np.array([0.3, -0.2, 0.5]), np.array([-0.1, 0.6, 0.2])
    rho1 = (I2 + np.einsum("j,jxy->xy", r1, q.PAULI)) / 2
    rho2 = (I2 + np.einsum("j,jxy->xy", r2, q.PAULI)) / 2
    np.testing.assert_allclose(
        q.to_density(systems.product(r1, r2)), np.kron(rho1, rho2), atol=1e-15
    )
    # the singlet: T = -1, a = b = 0
    psi = np.array([0, 1, -1, 0]) / np.sqrt(2)
    close(q.from_density(jnp.outer(psi, psi)), systems.werner(1.0), 1e-15)
    # T_jk is not symmetric in general: T_xy = <sigma_x x sigma_y> for |0>(|0> + i|1>)
    psi = np.kron([1, 0], np.array([1, 1j]) / np.sqrt(2))
    s = q.from_density(jnp.outer(psi, psi.conj()))
    np.testing.assert_allclose(s.b, [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(s.T[2], [0, 1, 0], atol=1e-15)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"a \(\.\.\., 3\).*T \(\.\.\., 3, 3\)"):
        q.to_density(Bloch(jnp.zeros(3), jnp.zeros(3), jnp.zeros(9)))
    with pytest.raises(ValueError, match=r"rho must be a \(\.\.\., 4, 4\) matrix"):
        q.from_density(jnp.eye(2))


# --- random states --------------------------------------------------------------------------


@pytest.mark.parametrize("ensemble", ["hs", "bures", "pure"])
def test_random_states_are_states(ensemble):
    s = systems.states(1, N, 1.0, ensemble)
    ev = eigs(s)
    assert ev.min() >= -1e-12
    purity = np.einsum("nij,nji->n", q.to_density(s), q.to_density(s)).real
    if ensemble == "pure":
        np.testing.assert_allclose(purity, 1, atol=1e-12)
    else:
        assert ev.min() > 0  # full rank with probability one
        assert purity.max() < 1 - 1e-3
    # visibility scales every coordinate: the same key at v gives v times the v = 1 state
    close(systems.states(1, N, 0.3, ensemble), s.scale(0.3), 1e-15)


def test_random_states_deterministic_and_distinct():
    close(systems.states(5, N), systems.states(5, N), 0)
    assert not np.allclose(systems.states(5, N).T, systems.states(6, N).T)


def test_random_states_refuse_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"unknown ensemble 'ginibre'.*'hs'"):
        q.random_states(key, 3, 0.5, "ginibre")
    for v in (1.5, -0.1):
        with pytest.raises(ValueError, match=r"visibility must lie in \[0, 1\]"):
            q.random_states(key, 3, v)


# --- Hamiltonians ---------------------------------------------------------------------------


def test_hamiltonians_match_their_definitions():
    w = systems.OMEGA
    HH = w / 4 * (np.kron(X, X) + np.kron(Y, Y) + np.kron(Z, Z))
    np.testing.assert_allclose(q.heisenberg(w), HH, atol=1e-15)
    # triplet at +w/4 (three times), singlet at -3w/4
    np.testing.assert_allclose(
        np.linalg.eigvalsh(HH), [-3 * w / 4, w / 4, w / 4, w / 4], atol=1e-14
    )
    np.testing.assert_allclose(q.xxz(w, 1.0), q.heisenberg(w), atol=1e-15)
    Hd = w / 4 * (np.kron(X, X) + np.kron(Y, Y) - 0.4 * np.kron(Z, Z))
    np.testing.assert_allclose(q.xxz(w, -0.4), Hd, atol=1e-15)
    n1, n2 = systems.N1, systems.N2
    H0 = 0.5 * (
        systems.OMEGA1 * np.kron(np.einsum("j,jxy->xy", n1, q.PAULI), I2)
        + systems.OMEGA2 * np.kron(I2, np.einsum("j,jxy->xy", n2, q.PAULI))
    )
    np.testing.assert_allclose(systems.noninteracting(), H0, atol=1e-15)
    # axes are normalised by the constructor
    np.testing.assert_allclose(
        q.noninteracting(1.0, 3 * n1, 1.0, n2), q.noninteracting(1.0, n1, 1.0, n2)
    )
    with pytest.raises(ValueError, match="n1 must be a nonzero 3-vector"):
        q.noninteracting(1.0, [0, 0, 0], 1.0, n2)


def test_hermitian_checks_its_input():
    H = np.asarray(q.xxz(0.7, 0.3)) + np.kron(Z, I2)
    out = q.hermitian(H)
    assert out.shape == (4, 4) and out.dtype == np.complex128
    np.testing.assert_allclose(out, H)
    bad = H.copy()
    bad[0, 1] += 1e-3j
    with pytest.raises(ValueError, match=r"not Hermitian \(max \|H - H\^dag\| = 0.001\)"):
        q.hermitian(bad)
    with pytest.raises(ValueError, match=r"4x4 matrix; got shape \(2, 2\)"):
        q.hermitian(np.eye(2))
    with pytest.raises(ValueError, match=r"4x4 matrix; got shape \(4, 4, 1\)"):
        q.hermitian(np.zeros((4, 4, 1)))


# --- derivatives ----------------------------------------------------------------------------


@pytest.mark.parametrize("omega", [1.0, systems.OMEGA, -2.5])
def test_eq36_is_the_von_neumann_equation(omega):
    """Eq. (36) against -i[H, rho] (both linear in rho, so arbitrary coordinates are fair)."""
    for s in (systems.states(2, N), random_bloch(3, N)):
        close(
            q.heisenberg_bloch_derivative(s, omega),
            q.bloch_derivative(q.heisenberg(omega), s),
            1e-12,
        )


def test_eq36_structure():
    # a = b and symmetric T are stationary (the paper's counterexample uses these states)
    s = random_bloch(4, N)
    T = s.T + jnp.swapaxes(s.T, -1, -2)
    d = q.heisenberg_bloch_derivative(Bloch(s.a, s.a, T))
    close(d, Bloch(0 * s.a, 0 * s.a, 0 * T), 1e-15)
    # the antisymmetric part drives a: T = A(z) gives a' = omega z
    z = jnp.array([0.2, -0.5, 0.9])
    A = jnp.array([[0, -z[2], z[1]], [z[2], 0, -z[0]], [-z[1], z[0], 0]])
    d = q.heisenberg_bloch_derivative(Bloch(jnp.zeros(3), jnp.zeros(3), A), 2.0)
    np.testing.assert_allclose(d.a, 2 * z, atol=1e-15)


@pytest.mark.parametrize("name", ["heisenberg", "noninteracting"])
def test_evolve_derivative_at_zero(name):
    H = systems.HAMILTONIANS[name]()
    s = systems.states(5, N, 0.7)
    h = 1e-4  # truncation ~ h^2 |H|^3 / 6 ~ 1e-9, rounding ~ 1e-16 / h ~ 1e-12
    fd = [(p - m) / (2 * h) for p, m in zip(q.evolve(H, s, h), q.evolve(H, s, -h), strict=True)]
    close(Bloch(*fd), q.bloch_derivative(H, s), 1e-8)


# --- exact evolution ------------------------------------------------------------------------


def _hamiltonians():
    G = np.asarray(jax.random.normal(jax.random.key(9), (2, 4, 4)))
    Hr = q.hermitian((G[0] + 1j * G[1] + (G[0] + 1j * G[1]).conj().T) / 4)
    return {
        "heisenberg": systems.heisenberg(),
        "noninteracting": systems.noninteracting(),
        "xxz": q.xxz(0.8, -0.4),
        "random": Hr,
    }


@pytest.mark.parametrize("name", ["heisenberg", "noninteracting", "xxz", "random"])
def test_evolve_is_unitary_conjugation(name):
    H = _hamiltonians()[name]
    s = systems.states(6, N, 0.9)
    rho = np.asarray(q.to_density(s))
    for t in (0.3, 1.7, 10.0):
        U = scipy.linalg.expm(-1j * np.asarray(H) * t)  # an independent reference
        P = np.asarray(q.propagator(H, t))
        np.testing.assert_allclose(P, U, atol=1e-12)
        # unitary, so trace and hermiticity are kept (in Bloch coordinates both hold by
        # construction; what can go wrong is the conjugation, compared here)
        np.testing.assert_allclose(P @ P.conj().T, np.eye(4), atol=1e-13)
        rho_t = np.asarray(q.to_density(q.evolve(H, s, t)))
        np.testing.assert_allclose(rho_t, U @ rho @ U.conj().T, atol=1e-12)
        # the spectrum (hence positivity) is kept
        np.testing.assert_allclose(np.linalg.eigvalsh(rho_t), np.linalg.eigvalsh(rho), atol=1e-12)
        assert np.linalg.eigvalsh(rho_t).min() >= -1e-12


@pytest.mark.parametrize("name", ["heisenberg", "noninteracting", "random"])
def test_evolution_keeps_S_v(name):
    """S_v is invariant: evolved states are still v sigma + (1 - v)/4 with sigma a state."""
    H = _hamiltonians()[name]
    v = systems.SVD_VSTAR
    s0 = systems.states(7, 4000, v)
    st = q.evolve(H, s0, 2.3)
    # (rho_t - 1/4) / v + 1/4 is a density matrix
    assert eigs(st.scale(1 / v)).min() >= -1e-12
    # states at v* stay svd-admissible (|a| + |b| + ||T||_1 <= 1)
    margin = systems.batched("svd").margin
    margins = np.asarray(margin(st))
    assert margins.min() >= -1e-12
    # the Hilbert-Schmidt ensemble is unitarily invariant: evolved margins are distributed
    # like those of fresh states (two-sample KS test; p ~ U(0, 1) when the law is right)
    fresh = np.asarray(margin(systems.states(8, 4000, v)))
    p = ks_2samp(margins, fresh).pvalue
    assert p > 1e-3, p


def test_noninteracting_rotates_bloch_vectors():
    H = systems.noninteracting()
    s = systems.states(10, N)
    for t in (0.4, 3.0, -1.2):
        close(q.evolve(H, s, t), systems.rotate(s, t), 1e-12)
    # a' = omega1 n1 x a, b' = omega2 n2 x b, T' = A1 T - T A2
    d = q.bloch_derivative(H, s)
    np.testing.assert_allclose(d.a, systems.OMEGA1 * jnp.cross(systems.N1, s.a), atol=1e-14)
    np.testing.assert_allclose(d.b, systems.OMEGA2 * jnp.cross(systems.N2, s.b), atol=1e-14)


def test_heisenberg_swaps_at_half_period():
    """exp(-i H t) at omega t = pi is the swap up to a phase: a and b exchange, T -> T^T."""
    s = systems.states(11, N)
    st = q.evolve(q.heisenberg(1.0), s, np.pi)
    close(st, Bloch(s.b, s.a, jnp.swapaxes(s.T, -1, -2)), 1e-12)


# --- time-dependent Hamiltonians -------------------------------------------------------------


def test_time_dependent_constant_H_is_exact():
    H = systems.heisenberg()
    Htd = q.TimeDependent(lambda t: jnp.asarray(H), 7)
    s = systems.states(12, N)
    for t in (0.5, 2.0, 1):  # an integer time once (a carry-dtype regression)
        close(q.evolve(Htd, s, t), q.evolve(H, s, t), 1e-10)


def _reference_propagator(Htd, t):
    """U(t) by an adaptive high-order ODE solver (independent of the midpoint product)."""

    def rhs(tt, u):
        U = u.reshape(4, 4)
        return (-1j * np.asarray(Htd.fn(tt)) @ U).ravel()

    sol = scipy.integrate.solve_ivp(
        rhs, (0, t), np.eye(4, dtype=complex).ravel(), method="DOP853", rtol=1e-12, atol=1e-13
    )
    return sol.y[:, -1].reshape(4, 4)


def test_time_dependent_converges_at_second_order():
    t = 1.5
    U_ref = _reference_propagator(systems.driven(), t)
    s = systems.states(13, N)
    rho_ref = U_ref @ np.asarray(q.to_density(s)) @ U_ref.conj().T
    errs = []
    for steps in (8, 16, 32, 64):
        rho = np.asarray(q.to_density(q.evolve(systems.driven(steps), s, t)))
        errs.append(np.max(np.abs(rho - rho_ref)))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    # second order: halving the step divides the error by 4
    np.testing.assert_allclose(ratios, 4, rtol=0.1)
    assert errs[-1] < 1e-4


# --- transformations ------------------------------------------------------------------------


def test_everything_jits_and_vmaps():
    s = systems.states(14, N)
    H = systems.heisenberg()
    close(jax.jit(q.heisenberg_bloch_derivative)(s), q.heisenberg_bloch_derivative(s), 1e-15)
    close(jax.jit(q.bloch_derivative)(H, s), q.bloch_derivative(H, s), 1e-15)
    ts = jnp.array([0.7, 2.0])
    traj = jax.jit(jax.vmap(lambda t: q.evolve(H, s, t)))(ts)
    close(systems.one(traj, 0), q.evolve(H, s, 0.7), 1e-13)
    # one time per state broadcasts against the batch
    close(q.evolve(H, s, jnp.full(N, 0.7)), q.evolve(H, s, 0.7), 1e-14)
    # time-dependent: jitted, and batched over times (one state)
    Htd = systems.driven(20)
    s0 = systems.one(s, 0)
    both = q.evolve(Htd, s0, ts)
    close(jax.jit(lambda t: q.evolve(Htd, s0, t))(2.0), systems.one(both, 1), 1e-13)
    close(jax.jit(jax.vmap(lambda t: q.evolve(Htd, s0, t)))(ts), both, 1e-13)
    # random states, vmapped over keys and jitted (size, visibility, ensemble static)
    keys = jax.random.split(jax.random.key(3), 4)
    batch = jax.jit(jax.vmap(lambda k: q.random_states(k, N, 0.5, "bures")))(keys)
    assert batch.T.shape == (4, N, 3, 3)
    close(systems.one(batch, 2), q.random_states(keys[2], N, 0.5, "bures"), 1e-15)
