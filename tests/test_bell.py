"""The Bell model's statistics (lhvjax.bell) reproduced by both gauges, float64.

Monte Carlo checks compare with the exact value at 4 standard errors. Seeds are fixed,
so each check is deterministic; at 4 sigma a correct estimator fails a given check with
probability 6e-5, and the ~350 checks here were all seen to pass. The sample sizes make
a wrong factor or sign in any statistic a > 10 sigma failure.
"""

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems

from lhvjax import bell, quantum, sphere
from lhvjax.quantum import Bloch

M = 2**16  # points per state


def test_outcome_and_prob_up():
    n = jnp.array([0.0, 0.0, 1.0])
    lam = jnp.array([[0.6, 0, 0.8], [0.6, 0, -0.8], [1.0, 0, 0]])  # above, below, on the equator
    np.testing.assert_array_equal(bell.outcome(n, lam), [1, -1, -1])  # Theta(0) = 0
    np.testing.assert_array_equal(bell.prob_up(n, lam), [1, 0, 0])
    assert bell.outcome(n, lam).dtype == lam.dtype


def test_mean_with_stderr():
    x = jax.random.normal(jax.random.key(0), (1000, 3))
    w = jax.random.uniform(jax.random.key(1), (1000, 3))
    e = bell.mean_with_stderr(x, w)
    np.testing.assert_allclose(e.mean, np.mean(x * w, 0), rtol=1e-12)
    np.testing.assert_allclose(e.stderr, np.std(x * w, 0, ddof=1) / np.sqrt(1000), rtol=1e-12)
    e = bell.mean_with_stderr(x.T, axis=1)
    np.testing.assert_allclose(e.mean, np.mean(x, 0), rtol=1e-12)


def test_quantum_statistics_are_expectation_values():
    s = systems.states(1, 50)
    n1, n2 = systems.directions(2, 50), systems.directions(3, 50)
    rho = np.asarray(quantum.to_density(s))
    s1 = np.einsum("nj,jxy->nxy", n1, quantum.PAULI)
    s2 = np.einsum("nj,jxy->nxy", n2, quantum.PAULI)
    I2 = np.eye(2)
    A = np.stack([np.kron(a, I2) for a in s1])
    B = np.stack([np.kron(I2, b) for b in s2])
    AB = np.stack([np.kron(a, b) for a, b in zip(s1, s2, strict=True)])
    tr = lambda O: np.einsum("nxy,nyx->n", rho, O).real
    np.testing.assert_allclose(bell.quantum_single(s, n1, 0), tr(A), atol=1e-14)
    np.testing.assert_allclose(bell.quantum_single(s, n2, 1), tr(B), atol=1e-14)
    np.testing.assert_allclose(bell.quantum_joint(s, n1, n2), tr(AB), atol=1e-14)
    # the singlet: <n1.s x n2.s> = -n1.n2
    np.testing.assert_allclose(
        bell.quantum_joint(systems.werner(1.0), n1[0], n2[0]), -n1[0] @ n2[0], atol=1e-15
    )


# --- the gauges reproduce quantum mechanics ---------------------------------------------------


def _test_states(name):
    """Admissible states of several kinds, including degenerate ones (any basis is valid)."""
    v = 0.95 * systems.gauge(name).visibility().value
    hs = systems.states(10, 3, v)
    bures = systems.states(11, 1, v, "bures")
    pure = systems.states(12, 1, v, "pure")
    named = [systems.werner(v), systems.product([0, 0, 0.45], [0.3, 0, 0])]
    out = [systems.one(b, i) for b in (hs, bures, pure) for i in range(b.a.shape[0])]
    return out + named


@jax.jit
def _estimates(lam, weights, n1, n2):
    """E[sign(n1.l1)], E[sign(n2.l2)] and E[sign(n1.l1) sign(n2.l2)] per direction pair."""
    one = lambda n, p: bell.single(n, lam, p, weights)
    return (
        jax.vmap(one, in_axes=(0, None))(n1, 0),
        jax.vmap(one, in_axes=(0, None))(n2, 1),
        jax.vmap(lambda a, b: bell.joint(a, b, lam, weights))(n1, n2),
    )


def _check_statistics(lam, weights, s, seed):
    n1, n2 = systems.directions(seed, 4), systems.directions(seed + 1, 4)
    exact = (
        bell.quantum_single(s, n1, 0),
        bell.quantum_single(s, n2, 1),
        bell.quantum_joint(s, n1, n2),
    )
    for est, ex in zip(_estimates(lam, weights, n1, n2), exact, strict=True):
        assert np.all(systems.within(est, ex)), (est, ex)
        assert np.max(est.stderr) < 0.02


@pytest.mark.parametrize("name", ["svd", "linear"])
def test_statistics_from_weighted_uniform_points(name):
    lam = sphere.uniform(jax.random.key(20), M)
    states = _test_states(name)
    W = systems.batched(name).density(systems.stack(*states), lam)
    for i, s in enumerate(states):
        _check_statistics(lam, W[i], s, 30 + 2 * i)


@pytest.mark.parametrize("name", ["svd", "linear"])
def test_statistics_from_exact_samples(name):
    G = systems.gauge(name)
    for i, s in enumerate(_test_states(name)):
        lam = G.sample(jax.random.key(40 + i), s, M)
        assert lam.shape == (M, 2, 3)
        np.testing.assert_allclose(jnp.linalg.norm(lam, axis=-1), 1, atol=1e-12)
        _check_statistics(lam, None, s, 50 + 2 * i)


def test_a_wrong_density_is_caught():
    """The statistics check has teeth: the transposed state's density fails it."""
    s = systems.one(systems.states(13, 1, 0.24), 0)
    lam = sphere.uniform(jax.random.key(21), M)
    wrong = Bloch(s.b, s.a, s.T.T)
    w = systems.batched("linear").density(systems.stack(wrong), lam)[0]
    with pytest.raises(AssertionError):
        _check_statistics(lam, w, s, 60)


@pytest.mark.parametrize("name", ["svd", "linear"])
def test_only_odd_moments_are_fixed(name):
    """sign(n.l) has odd Legendre components only, so a valid p has E[Y_l1 Y_l2] = 0 for
    l1, l2 each odd or zero beyond the first moments (DESIGN section 3); even degrees are
    free: the svd gauge uses them, the linear gauge does not."""
    s = systems.product([0, 0.45, 0], [0.3, 0, 0])
    lam = sphere.uniform(jax.random.key(22), M)
    w = systems.batched(name).density(systems.stack(s), lam)[0]
    Y = lambda l, k: e3nn.sh(l, lam[:, k], normalize=True, normalization="component")
    for f in (
        Y(3, 0),
        Y(3, 1),
        (Y(1, 0)[:, :, None] * Y(3, 1)[:, None, :]).reshape(M, -1),
        (Y(3, 0)[:, :, None] * Y(3, 1)[:, None, :]).reshape(M, -1),
        Y(5, 0),
    ):
        est = bell.mean_with_stderr(f, w[:, None])
        assert np.all(systems.within(est, 0)), est
    # the degree-2 zonal moment of party 1 about a = 0.45 y. In the svd gauge the even
    # parts 2|a.l1| and 8 S R(xy) -> 2 S |u.l1| (u = y, S = 0.45 * 0.3) carry it: the
    # Legendre coefficient of |x| at degree 2 is 5/8 and E[P2^2] = 1/5, so E[w P2] =
    # (|a| + S) / 4. e3nn's component 2 of degree 2 is sqrt(5) P2(l.y). Linear gauge: 0.
    est = bell.mean_with_stderr(Y(2, 0)[:, 2], w)
    exact = np.sqrt(5) * (0.45 + 0.45 * 0.3) / 4 if name == "svd" else 0.0
    assert systems.within(est, exact), (est, exact)
