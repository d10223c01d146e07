"""N qubits (lhvjax.nqubits): Pauli-tensor states, switched 2-local Hamiltonians, exact
evolution, the N-qubit linear gauge (N = 2 against lhvjax.gauges.Linear, v*, Bell
statistics) and the strong residual (rotation field, Hutchinson against exact).

float64 unless stated; Monte Carlo checks compare at 4 standard errors with fixed seeds.
"""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lhvjax import local
from lhvjax import nqubits as nq
from lhvjax import quantum as q
from lhvjax.gauges import InadmissibleStateError, Linear
from lhvjax.quantum import Bloch
from lhvjax.sphere import normalize, project, uniform, value_and_div

# jitted entry points: eager JAX pays a dispatch per small op, which dominates test time
random_states = jax.jit(nq.random_states, static_argnums=(1, 2, 3))
separable_states = jax.jit(nq.separable_states, static_argnums=(1, 2, 3, 4))
sample_batch = jax.jit(nq.sample_batch, static_argnums=(0, 2, 3, 4))
residuals = jax.jit(nq.residuals, static_argnums=(0, 1))
normalized_loss = jax.jit(nq.normalized_loss, static_argnums=(0, 1))

SCHEDULE = [(0.0, 1.0, (0, 1), 1.0), (1.0, 2.0, (1, 2), 0.7)]


def switched(ramp=0.0):
    """The 3-qubit test system: Heisenberg 0-1 on [0, 1), XXZ-free 1-2 on [1, 2), a
    constant field on qubit 2 and one on qubit 0 during [0.5, 1.5)."""
    fields = [nq.Zeeman(2, 0.5, (1, 0, 0)), nq.Zeeman(0, 0.9, (0, 1, 1), 0.5, 1.5)]
    return nq.schedule(3, SCHEDULE, delta=1.0, fields=fields, ramp=ramp)


def noninteracting(n=3):
    """Local fields only, switching like `switched`'s couplings: Theorem 1's setting."""
    z = [
        nq.Zeeman(0, 1.0, (0, 0, 1), 0.0, 1.0),
        nq.Zeeman(1, 0.8, (1, 0, 0), 0.0, 1.0),
        nq.Zeeman(1, 1.0, (0, 1, 0), 1.0, 2.0),
        nq.Zeeman(2, 0.6, (1, 1, 0), 1.0, 2.0),
    ]
    return nq.Hamiltonian(n, zeeman=[x for x in z if x.k < n])


def to_bloch(R):
    return Bloch(R[..., 1:, 0], R[..., 0, 1:], R[..., 1:, 1:])


def kron_op(n, ops):
    return nq._kron_all([nq.SIGMA[ops.get(k, 0)] for k in range(n)])


# --- states ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_density_roundtrip(n, key):
    R = random_states(key, 3, n, 0.7)
    assert R.shape == (3,) + (4,) * n
    rho = nq.to_density(R, n)
    np.testing.assert_allclose(rho, np.swapaxes(rho.conj(), -1, -2), atol=1e-15)
    np.testing.assert_allclose(np.trace(rho, axis1=-2, axis2=-1), 1, atol=1e-14)
    np.testing.assert_allclose(nq.from_density(rho, n), R, atol=1e-14)
    np.testing.assert_allclose(R[(slice(None),) + (0,) * n], 1, atol=1e-14)
    # R_mu = tr(rho sigma_mu) for a few explicit Pauli strings
    for mu in list(itertools.product(range(4), repeat=n))[:: max(1, 4**n // 7)]:
        P = kron_op(n, dict(enumerate(mu)))
        want = np.real(np.einsum("sxy,yx->s", np.asarray(rho), P))
        np.testing.assert_allclose(R[(slice(None), *mu)], want, atol=1e-14)


def test_product_state_is_kron(key):
    r = normalize(jax.random.normal(key, (3, 3))) * jnp.array([[1.0], [0.5], [0.2]])
    rho = nq.to_density(nq.product_state(r), 3)
    singles = [(np.eye(2) + np.einsum("a,axy->xy", np.asarray(x), q.PAULI)) / 2 for x in r]
    np.testing.assert_allclose(rho, nq._kron_all(singles), atol=1e-15)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 4, 4, 4\)"):
        nq.to_density(jnp.zeros((4, 4)), 3)
    with pytest.raises(ValueError, match="visibility must lie in"):
        nq.random_states(jax.random.key(0), 2, 2, 1.5)


@pytest.mark.parametrize("n", [2, 3])
def test_ensembles_in_noisy_ball(n, key):
    v = 0.3
    R = random_states(key, 64, n, v)
    vis = np.asarray(nq.noisy_ball_visibility(R, n))
    # rho in S_v exactly; Hilbert-Schmidt sigma is full rank, so strictly inside
    assert np.all(vis <= v + 1e-12) and np.all(vis < v - 1e-6)
    Rs = separable_states(jax.random.key(1), 64, n, 3, v)
    rho = np.asarray(nq.to_density(Rs, n))
    assert np.all(np.asarray(nq.noisy_ball_visibility(Rs, n)) <= v + 1e-12)
    # separable: every partial transpose is positive (PPT), here of qubit 0
    d = 2 ** (n - 1)
    pt = rho.reshape(64, 2, d, 2, d).transpose(0, 3, 2, 1, 4).reshape(64, 2 * d, 2 * d)
    assert np.linalg.eigvalsh(pt).min() > -1e-12


def test_ensembles_dtype(f32):
    R = random_states(jax.random.key(0), 4, 3, 0.1)
    Rs = separable_states(jax.random.key(0), 4, 3, 4, 0.1)
    assert R.dtype == Rs.dtype == jnp.float32


# --- Hamiltonians ----------------------------------------------------------------------------


def test_hamiltonian_matrix_and_graph():
    H = switched()
    n = 3
    heis = sum(kron_op(n, {0: a, 1: a}) for a in (1, 2, 3)) / 4
    heis12 = 0.7 * sum(kron_op(n, {1: a, 2: a}) for a in (1, 2, 3)) / 4
    f2 = 0.25 * kron_op(n, {2: 1})
    nn = np.array([0, 1, 1]) / np.sqrt(2)
    f0 = 0.45 * sum(nn[a] * kron_op(n, {0: a + 1}) for a in range(3))
    cases = {0.2: heis + f2, 0.7: heis + f2 + f0, 1.2: heis12 + f2 + f0, 1.7: heis12 + f2, 3.0: f2}
    for t, want in cases.items():
        np.testing.assert_allclose(H.matrix(t), want, atol=1e-15)
    np.testing.assert_array_equal(H.adjacency(0.5) != 0, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(H.adjacency(1.5) != 0, [[0, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(H.adjacency(2.0), np.zeros((3, 3)))
    np.testing.assert_allclose(H.local_fields(1.0)[0], 0.9 * nn)
    np.testing.assert_allclose(H.local_fields(1.6)[0], 0)
    assert H.pairs == ((0, 1), (1, 0), (1, 2), (2, 1))
    np.testing.assert_allclose(H.switch_times(), [0.5, 1.0, 1.5, 2.0])


def test_graph_constructors_and_errors():
    assert nq.edges(4, "chain") == ((0, 1), (1, 2), (2, 3))
    assert nq.edges(4, "ring")[-1] == (3, 0)
    H = nq.heisenberg(4, "ring", J=2.0, delta=0.5)
    assert np.count_nonzero(np.asarray(H.adjacency(0.0))) == 8
    with pytest.raises(ValueError, match="two different qubits"):
        nq.Hamiltonian(2, couplings=[nq.Coupling(0, 2)])
    with pytest.raises(ValueError, match="unknown graph"):
        nq.edges(3, "star")
    with pytest.raises(ValueError, match="evolve runs forward"):
        switched().evolve(nq.maximally_mixed(3), -1.0)


def test_smooth_switching_vanishes_outside_window():
    H = switched(ramp=0.2)
    s = np.asarray(jax.vmap(H.switches)(jnp.array([-0.1, 0.0, 0.1, 0.5, 0.9, 1.0, 1.05])))
    c01 = s[:, 0]
    np.testing.assert_allclose(c01, [0, 0, 0.5, 1, 0.5, 0, 0], atol=1e-15)
    # the graph changes at definite times even though the coupling is smooth
    assert np.asarray(H.adjacency(1.0))[0, 1] == 0


def test_velocity_pauli_matches_matrix(key):
    for H in (switched(), nq.heisenberg(4, "ring", delta=0.3, fields=[nq.Zeeman(3, 1.3)])):
        n = H.n_qubits
        R = random_states(key, 4, n, 1.0)
        pauli = jax.jit(jax.vmap(jax.vmap(H.velocity, (None, 0)), (0, None)))
        matrix = jax.jit(jax.vmap(H.velocity_matrix, (0, None)))
        ts = jnp.array([0.3, 0.75, 1.2, 2.5])
        np.testing.assert_allclose(pauli(ts, R), matrix(ts, R), atol=1e-14)


def test_velocity_analytic_cases(key):
    # one field: the Bloch index precesses, r' = omega n x r, on its qubit only
    H = nq.Hamiltonian(2, zeeman=[nq.Zeeman(1, 1.7, (1, 2, 2))])
    R = random_states(key, 1, 2, 1.0)[0]
    dR = H.velocity(0.0, R)
    n = np.array([1, 2, 2]) / 3
    np.testing.assert_allclose(dR[0, 1:], 1.7 * np.cross(n, R[0, 1:]), atol=1e-14)
    np.testing.assert_allclose(dR[1:, 1:], 1.7 * np.cross(n, R[1:, 1:]), atol=1e-14)
    np.testing.assert_allclose(dR[:, 0], 0, atol=1e-15)
    # two-qubit Heisenberg: the paper's eq. (36)
    H = nq.heisenberg(2, J=1.3)
    want = q.heisenberg_bloch_derivative(to_bloch(R), omega=1.3)
    got = to_bloch(H.velocity(0.0, R))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-14)


# --- evolution -------------------------------------------------------------------------------


def reference_propagator(H, t, pieces=64):
    """Product of scipy expm over the intervals of the schedule (ramp = 0), or many midpoint
    steps for a smooth one."""
    if H.piecewise_constant:
        b = [0.0] + [s for s in H.switch_times() if s < t] + [t]
        U = np.eye(2**H.n_qubits, dtype=complex)
        for lo, hi in zip(b[:-1], b[1:], strict=True):
            U = scipy.linalg.expm(-1j * np.asarray(H.matrix((lo + hi) / 2)) * (hi - lo)) @ U
        return U
    dt = t / pieces
    Hs = np.asarray(jax.vmap(H.matrix)((jnp.arange(pieces) + 0.5) * dt))
    U = np.eye(2**H.n_qubits, dtype=complex)
    for k in range(pieces):
        U = scipy.linalg.expm(-1j * Hs[k] * dt) @ U
    return U


def test_piecewise_evolution_exact(key):
    H = switched()
    for t in (0.4, 1.3, 2.6):
        np.testing.assert_allclose(H.propagator(t), reference_propagator(H, t), atol=1e-13)
    R = random_states(key, 4, 3, 1.0)
    ts = jnp.array([0.3, 0.9, 1.6, 2.2])
    Rt = H.evolve(R, ts)
    # unitary: trace, spectrum and hence S_v membership (noisy-ball visibility) preserved
    rho_t = np.asarray(nq.to_density(Rt, 3))
    np.testing.assert_allclose(np.trace(rho_t, axis1=1, axis2=2), 1, atol=1e-13)
    ev0 = np.linalg.eigvalsh(np.asarray(nq.to_density(R, 3)))
    np.testing.assert_allclose(np.linalg.eigvalsh(rho_t), ev0, atol=1e-13)
    assert ev0.min() > 0
    # the derivative of the exact evolution is the von Neumann velocity (between switches)
    for i, t in enumerate(ts):
        d = jax.jvp(lambda s, i=i: H.evolve(R[i], s), (t,), (jnp.ones_like(t),))[1]
        np.testing.assert_allclose(d, H.velocity(t, Rt[i]), atol=1e-12)


def test_smooth_evolution_midpoint_converges():
    H = switched(ramp=0.3)
    t = 1.7
    ref = reference_propagator(H, t, pieces=400)
    err = [
        np.abs(np.asarray(dataclasses.replace(H, steps=s).propagator(t)) - ref).max()
        for s in (25, 50)
    ]
    # second order: halving the step divides the error by about 4 (the switching is only
    # C^1, so not exactly 4)
    assert err[1] < 1e-4 and 3.0 < err[0] / err[1] < 6.0


# --- the linear gauge ------------------------------------------------------------------------


def test_linear_gauge_n2_matches_two_qubit_linear(key):
    R = random_states(key, 5, 2, 0.2)
    lam = uniform(jax.random.key(1), 64, 2)
    g = nq.LinearGauge(2)
    got = jax.vmap(jax.vmap(g.density, in_axes=(None, 0)), in_axes=(0, None))(R, lam)
    lin = Linear()
    want = jax.vmap(jax.vmap(lin.density, in_axes=(None, 0)), in_axes=(0, None))(to_bloch(R), lam)
    np.testing.assert_allclose(got, want, atol=1e-14)
    # and the state derivative along the Heisenberg velocity, via the two-qubit code
    H = nq.heisenberg(2)
    dR = jax.vmap(lambda r: H.velocity(0.0, r))(R)
    dw = jax.vmap(jax.vmap(g.density, in_axes=(None, 0)), in_axes=(0, None))(dR, lam)
    dB = q.bloch_derivative(q.heisenberg(), to_bloch(R))
    want = jax.vmap(jax.vmap(lin.dpdt, in_axes=(None, None, 0)), in_axes=(0, 0, None))(
        to_bloch(R), dB, lam
    )
    np.testing.assert_allclose(dw, want, atol=1e-14)
    assert abs(g.visibility().value - lin.visibility().value) < 1e-9


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_visibility_closed_form(n, key):
    vs = nq.LinearGauge(n).visibility().value
    assert vs == pytest.approx(1 / (3 ** (n - 1) + 1), rel=1e-12)
    # the spectrum of prod_k (1 + 2 l_k.sigma) - 1 is the same at random lambda
    lam = np.asarray(uniform(key, 3, n))
    for x in lam:
        O = nq._kron_all([np.eye(2) + 2 * np.einsum("a,axy->xy", xk, q.PAULI) for xk in x])
        low = np.linalg.eigvalsh(O - np.eye(2**n))[0]
        assert -1 / low == pytest.approx(vs, rel=1e-10)


@pytest.mark.parametrize("n", [2, 3])
def test_visibility_is_sharp(n, key):
    g = nq.LinearGauge(n)
    vs = g.visibility().value
    # every random state of S_{v*} is admissible ...
    R = random_states(key, 16, n, vs)
    assert np.asarray(g._margins(R)).min() >= -1e-12
    g.check(R)
    # ... and the worst one, sigma = the bottom eigenvector of O(z, ..., z), reaches w = 0 at
    # lambda = (z, ..., z): above v* it is refused
    z = np.array([0, 0, 1.0])
    O = nq._kron_all([np.eye(2) + 2 * q.PAULI[2]] * n) - np.eye(2**n)
    psi = np.linalg.eigh(O)[1][:, 0]
    sigma = nq.from_density(jnp.asarray(np.outer(psi, psi.conj())), n)
    lam = jnp.asarray(np.tile(z, (n, 1)))
    assert float(g.density(nq.scale(sigma, vs, n), lam)) == pytest.approx(0, abs=1e-12)
    bad = nq.scale(sigma, 1.05 * vs, n)
    assert float(g._margins(bad[None])[0]) < 0
    with pytest.raises(InadmissibleStateError, match=f"v\\* = {vs:.6f}"):
        g.check(bad[None])
    with pytest.raises(InadmissibleStateError, match="Set the visibility to at most"):
        nq.Problem(switched() if n == 3 else nq.heisenberg(2), 1.05 * vs)


def test_bell_statistics_weighted_monte_carlo(key):
    n = 3
    g = nq.LinearGauge(n)
    R = random_states(key, 1, n, 0.1)[0]
    M = 2**18
    lam = uniform(jax.random.key(2), M, n)
    w = jax.vmap(g.density, in_axes=(None, 0))(R, lam)
    assert abs(float(jnp.mean(w)) - 1) < 4 * float(jnp.std(w)) / np.sqrt(M)
    rho = np.asarray(nq.to_density(R, n))
    dirs = normalize(jax.random.normal(jax.random.key(3), (4, n, 3)))
    for nk in dirs:
        x = w * jnp.prod(jnp.sign(jnp.sum(lam * nk, -1)), -1)
        mean, se = float(jnp.mean(x)), float(jnp.std(x)) / np.sqrt(M)
        op = nq._kron_all([np.einsum("a,axy->xy", np.asarray(v), q.PAULI) for v in nk])
        want = np.real(np.trace(rho @ op))
        assert abs(mean - want) < 4 * se, (mean, want, se)
        # marginals: single-qubit statistic E[sign(n.l_0)] = tr(rho n.sigma x 1 x 1)
    x = w * jnp.sign(lam[:, 0] @ dirs[0, 0])
    want = float(jnp.sum(R[1:, 0, 0] * dirs[0, 0]))
    assert abs(float(jnp.mean(x)) - want) < 4 * float(jnp.std(x)) / np.sqrt(M)


def test_exact_samples_reproduce_correlations(key):
    n = 3
    g = nq.LinearGauge(n)
    R = random_states(key, 1, n, 0.1)[0]
    M = 40_000
    lam = np.asarray(g.sample(jax.random.key(5), R, M))
    assert lam.shape == (M, n, 3)
    # E_unif[2 l_a l_b] = 2 delta_ab / 3, so E_p[l_0a l_1b l_2c] = (2/3)^3 R_abc / 8 * 8 / 8:
    # E_p[(27/8) l_0a l_1b l_2c] = R_abc, and E_p[3 l_0a / 2] = R_a00
    x = 27 / 8 * np.einsum("sa,sb,sc->sabc", lam[:, 0], lam[:, 1], lam[:, 2]).reshape(M, -1)
    mean, se = x.mean(0), x.std(0) / np.sqrt(M)
    assert np.all(np.abs(mean - np.asarray(R[1:, 1:, 1:]).reshape(-1)) < 4.5 * se)
    y = 1.5 * lam[:, 0]
    assert np.all(np.abs(y.mean(0) - np.asarray(R[1:, 0, 0])) < 4 * y.std(0) / np.sqrt(M))


# --- the residual ----------------------------------------------------------------------------


def test_rotation_field_zero_residual_n3(key):
    H = noninteracting(3)
    problem = nq.Problem(H, 0.09, t_max=2.0)
    batch = sample_batch(problem, key, 4, 8, 64)
    r, dw = residuals(problem, local.rotation_field(), {}, batch)
    assert float(jnp.mean(dw**2)) > 1e-4
    assert float(jnp.max(jnp.abs(r))) < 1e-13
    out = normalized_loss(problem, local.zero_field(), {}, batch)
    assert float(out["normalized_loss"]) == pytest.approx(1.0, abs=1e-12)


def test_rotation_field_zero_residual_float32(f32, key):
    problem = nq.Problem(noninteracting(3), 0.09, t_max=2.0)
    batch = sample_batch(problem, jax.random.key(0), 2, 8, 64)
    assert batch.R.dtype == jnp.float32
    out = normalized_loss(problem, local.rotation_field(), {}, batch)
    assert float(out["normalized_loss"]) < 1e-10


def test_residual_matches_pointwise_formula(key):
    # a generic field (not a solution): r = dw + w div V + V . grad w, each term computed
    # pointwise with autodiff of the density, against the matmul form
    H = switched()
    problem = nq.Problem(H, 0.1, t_max=2.0)
    batch = sample_batch(problem, key, 2, 3, 5)
    field = local.NonlocalField(3, width=4, depth=1, local_part=False)
    params = local.init_params(field, jax.random.key(1), 3, jnp.float64)
    params = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape), params)
    r, dw = residuals(problem, field, params, batch)
    g = problem.gauge

    def pointwise(t, R, dR, x):
        V, div = value_and_div(lambda y: field.apply(params, y, H.drive(t)), x)
        grad = project(x, jax.grad(lambda y: g.density(R, y))(x))
        d = g.density(dR, x)
        return d + g.density(R, x) * div + jnp.sum(V * grad), d

    over_points = jax.vmap(pointwise, (None, None, None, 0))
    over_states = jax.vmap(over_points, (None, 0, 0, None))
    want, dwant = jax.jit(jax.vmap(over_states, (0, 0, 0, None)))(
        batch.t, batch.R, batch.dR, batch.lam
    )
    np.testing.assert_allclose(r[:, 0], want, atol=1e-12)
    np.testing.assert_allclose(dw, dwant, atol=1e-14)


def test_hutchinson_unbiased(key):
    H = switched()
    field = local.NonlocalField(3, width=4, depth=1, local_part=False)
    params = local.init_params(field, jax.random.key(1), 3, jnp.float64)
    params = jax.tree.map(lambda x: jax.random.normal(jax.random.key(2), x.shape), params)
    lam = uniform(key, 4, 3)
    drive = H.drive(0.5)
    V, exact = jax.jit(lambda: nq.field_terms(field, params, lam, drive))()
    K = 2000

    @jax.jit
    def hutch(keys):
        return jax.vmap(lambda k: nq.field_terms(field, params, lam, drive, "hutchinson", k))(keys)

    Vh, ests = hutch(jax.random.split(jax.random.key(3), K))  # (K, P, N, 3), (K, 2, P)
    Vh = Vh[0]
    np.testing.assert_allclose(Vh, V, atol=1e-14)
    mean = ests.mean(0)  # (2, P)
    se = ests.std(0) / np.sqrt(K)
    assert np.all(np.abs(mean - exact) < 4 * se)
    # the two estimates of one call are independent: their product estimates div^2
    prod = ests[:, 0] * ests[:, 1]
    assert np.all(np.abs(prod.mean(0) - exact[0] ** 2) < 4 * prod.std(0) / np.sqrt(K))


def test_hutchinson_loss_unbiased(key):
    H = switched()
    exact_p = nq.Problem(H, 0.1, t_max=2.0)
    hutch_p = nq.Problem(H, 0.1, t_max=2.0, divergence="hutchinson")
    field = local.NonlocalField(3, width=4, depth=1, local_part=False)
    params = local.init_params(field, jax.random.key(1), 3, jnp.float64)
    params = jax.tree.map(lambda x: 0.3 * jax.random.normal(jax.random.key(2), x.shape), params)
    batch = sample_batch(exact_p, key, 2, 4, 16)
    exact = float(jax.jit(lambda: nq.loss(exact_p, field, params, batch))())
    f = jax.jit(jax.vmap(lambda k: nq.loss(hutch_p, field, params, batch, key=k)))
    vals = np.asarray(f(jax.random.split(jax.random.key(4), 400)))
    assert abs(vals.mean() - exact) < 4 * vals.std() / np.sqrt(len(vals))


def test_problem_errors():
    H = switched()
    with pytest.raises(ValueError, match="unknown divergence"):
        nq.Problem(H, 0.05, divergence="fd")
    with pytest.raises(ValueError, match="unknown ensemble"):
        nq.Problem(H, 0.05, ensemble="pure")
    with pytest.raises(InadmissibleStateError, match="v\\* = 0.100000"):
        nq.Problem(H, 0.2)
