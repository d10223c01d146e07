"""The learned gauge: it changes only the invisible moments and stays a probability density."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems

from lhvjax import bell, harmonics, sphere
from lhvjax import quantum as q
from lhvjax.gauges import Learned, get_gauge

V = 0.2


def _gauge(base, scale=1.0, seed=0):
    """A learned gauge with random nonzero coefficients (the trained output layer of a fresh
    network is zero, i.e. the base gauge; `scale` multiplies every parameter)."""
    g = Learned(base, degree=2, width=16, depth=2, feature_scale=V)
    params = g.init(jax.random.key(seed), jnp.float64)
    keys = iter(jax.random.split(jax.random.key(seed + 1), 16))
    params = jax.tree.map(lambda x: scale * jax.random.normal(next(keys), x.shape), params)
    return g.bind(params)


def _densities(g, states, lam):
    dens = jax.vmap(jax.vmap(g.density, in_axes=(None, 0)), in_axes=(0, None))
    return jax.jit(dens)(states, lam)


@pytest.mark.parametrize("base", ["svd", "linear"])
def test_starts_at_the_base_gauge(base):
    g = Learned(base, feature_scale=V)
    g = g.bind(g.init(jax.random.key(0), jnp.float64))
    S = systems.states(30, 4, V)
    lam = sphere.uniform(jax.random.key(31), 64)
    np.testing.assert_array_equal(_densities(g, S, lam), _densities(get_gauge(base), S, lam))


@pytest.mark.parametrize("base", ["svd", "linear"])
def test_odd_moments_are_the_base_gauges(base):
    # the correction is orthogonal to every moment the Bell statistics see: exact quadrature
    g = _gauge(base)
    lam, w = systems.product_quadrature(6)
    S = systems.states(32, 4, V)
    corr = _densities(g, S, lam) - _densities(get_gauge(base), S, lam)
    assert float(jnp.max(jnp.abs(corr))) > 0.05  # it does change the distributions
    A, B = harmonics.pairs(3, "odd")
    Y = harmonics.sh(lam[:, 0], 3)[:, A] * harmonics.sh(lam[:, 1], 3)[:, B]
    np.testing.assert_allclose(jnp.einsum("sp,p,pm->sm", corr, w, Y), 0, atol=1e-14)
    # while the free moments do move
    A, B = harmonics.pairs(2, "free")
    Y = harmonics.sh(lam[:, 0], 2)[:, A] * harmonics.sh(lam[:, 1], 2)[:, B]
    assert float(jnp.max(jnp.abs(jnp.einsum("sp,p,pm->sm", corr, w, Y)))) > 1e-4  # vs 1e-14


@pytest.mark.parametrize("base", ["svd", "linear"])
def test_density_stays_nonnegative_for_any_coefficients(base):
    # coefficients 100x too large, states at the edge of S_v*: the guard still holds
    vstar = get_gauge(base).visibility().value
    g = _gauge(base, scale=100.0)
    S = systems.states(33, 32, vstar)
    lam = sphere.uniform(jax.random.key(34), 4096)
    w = _densities(g, S, lam)
    base_w = _densities(get_gauge(base), S, lam)
    assert float(jnp.min(w)) >= 0
    assert float(jnp.max(jnp.abs(w - base_w))) > 0.01  # the guard did not switch it off
    room = jax.vmap(lambda s: g.prepare(s).room)(S)
    assert bool(jnp.all(jnp.abs(w - base_w) <= room[:, None]))


def test_bell_statistics_are_unchanged():
    # Monte Carlo on uniform points: E_u[(w - w_base) sign sign] is 0 within 4 standard errors
    # for single and joint statistics, though the densities differ by O(1)
    g = _gauge("svd")
    s = systems.one(systems.states(35, 1, V), 0)
    lam = sphere.uniform(jax.random.key(36), 2**16)
    corr = (
        _densities(g, systems.stack(s), lam)[0]
        - _densities(get_gauge("svd"), systems.stack(s), lam)[0]
    )
    for n1, n2 in zip(systems.directions(37, 4), systems.directions(38, 4), strict=True):
        for values in (
            bell.outcome(n1, lam[:, 0]),
            bell.outcome(n2, lam[:, 1]),
            bell.outcome(n1, lam[:, 0]) * bell.outcome(n2, lam[:, 1]),
        ):
            assert systems.within(bell.mean_with_stderr(values, corr), 0.0)


def test_exact_samples_reproduce_the_quantum_statistics():
    g = _gauge("linear")
    s = systems.one(systems.states(39, 1, V), 0)
    lam = g.sample(jax.random.key(40), s, 2**15)
    n1, n2 = systems.directions(41, 2)
    assert systems.within(bell.single(n1, lam, 0), bell.quantum_single(s, n1, 0))
    assert systems.within(bell.single(n2, lam, 1), bell.quantum_single(s, n2, 1))
    assert systems.within(bell.joint(n1, n2, lam), bell.quantum_joint(s, n1, n2))
    # and they follow the learned density, not the base one: a free moment shows it
    A, B = harmonics.pairs(2, "free")
    Y = harmonics.sh(lam[:, 0], 2)[:, A] * harmonics.sh(lam[:, 1], 2)[:, B]
    quad, w = systems.product_quadrature(6)
    dens = _densities(g, systems.stack(s), quad)[0]
    Yq = harmonics.sh(quad[:, 0], 2)[:, A] * harmonics.sh(quad[:, 1], 2)[:, B]
    exact = jnp.einsum("p,p,pm->m", dens, w, Yq)
    est = bell.mean_with_stderr(Y)
    assert bool(jnp.all(jnp.abs(est.mean - exact) <= 4.5 * est.stderr))


def test_dpdt_is_the_derivative_along_the_trajectory():
    g = _gauge("linear")
    H = systems.heisenberg()
    S = systems.states(42, 6, V)
    lam = sphere.uniform(jax.random.key(43), 256)
    per_point = jax.vmap(g.dpdt, in_axes=(None, None, 0))
    d = jax.vmap(per_point, in_axes=(0, 0, None))(S, q.bloch_derivative(H, S), lam)
    h = 1e-5
    fd = (_densities(g, q.evolve(H, S, h), lam) - _densities(g, q.evolve(H, S, -h), lam)) / (2 * h)
    assert float(jnp.max(jnp.abs(d))) > 0.1
    np.testing.assert_allclose(d, fd, atol=1e-7)


def test_learned_gauge_errors():
    with pytest.raises(ValueError, match="use gauge.bind"):
        Learned("svd").prepare(systems.maximally_mixed())
    with pytest.raises(ValueError, match="needs degree >= 2"):
        Learned("svd", degree=1)
    with pytest.raises(ValueError, match="must be a fixed gauge"):
        Learned(Learned("svd"))
    g = Learned("linear")
    assert g.visibility().value == get_gauge("linear").visibility().value
