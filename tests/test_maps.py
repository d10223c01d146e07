"""Sphere maps: the east/north frame and the density slices and marginals."""

import jax
import jax.numpy as jnp
import numpy as np

from lhvjax import fields, maps
from lhvjax.gauges import get_gauge
from lhvjax.quantum import Bloch


def test_east_north_frame_reconstructs_tangent_vectors():
    g = maps.lonlat_grid(12, 6)
    assert g.x.shape == (6, 12, 3)
    np.testing.assert_allclose(np.linalg.norm(g.x, axis=-1), 1.0)
    rng = np.random.default_rng(0)
    v = rng.normal(size=g.x.shape)
    v -= np.sum(v * g.x, -1, keepdims=True) * g.x  # tangent
    e, n = maps.east_north(g.x, v)
    np.testing.assert_allclose(e**2 + n**2, np.sum(v**2, -1), rtol=1e-10)
    # a rotation about z points due east with speed cos(latitude)
    e, n = maps.east_north(g.x, np.cross([0.0, 0.0, 1.0], g.x))
    np.testing.assert_allclose(e, np.cos(g.lat), atol=1e-12)
    np.testing.assert_allclose(n, 0.0, atol=1e-12)


def test_density_slice_and_marginal_of_the_linear_gauge():
    a, b = np.array([0.1, -0.05, 0.08]), np.array([0.0, 0.07, 0.02])
    T = np.diag([0.1, -0.05, 0.03])
    state = Bloch(jnp.asarray(a), jnp.asarray(b), jnp.asarray(T))
    gauge = get_gauge("linear")
    g = maps.lonlat_grid(8, 4)
    l2 = np.array([0.0, 0.6, 0.8])
    w = maps.density_slice(gauge, state, g, l2)
    expect = 1 + 2 * g.x @ a + 2 * b @ l2 + 4 * g.x @ T @ l2
    np.testing.assert_allclose(w, expect, rtol=1e-10)
    # marginal over l2: 1 + 2 a.l1 up to the Monte Carlo error of the l2 average
    m = maps.density_marginal(gauge, state, g, jax.random.key(0), samples=2000)
    np.testing.assert_allclose(m, 1 + 2 * g.x @ a, atol=0.03)


def test_field_slice_of_the_rotation_field():
    field = fields.rotation_field(1.0, [0, 0, 1], 0.5, [1, 0, 0])
    g = maps.lonlat_grid(6, 3)
    V, div = maps.field_slice(field, {}, g.x.reshape(-1, 3), np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(V[:, 0], np.cross([0, 0, 1.0], g.x.reshape(-1, 3)), atol=1e-12)
    np.testing.assert_allclose(div, 0.0, atol=1e-12)


def test_invariant_components_of_the_exchange_precession():
    # V1 = 2 (l2 x l1) + 0.5 P(l1) l2: components (0.5 sin, -2 sin) along (e_par, e_rot)
    rng = np.random.default_rng(1)
    l1, l2 = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in rng.normal(size=(2, 50, 3)))
    c = np.sum(l1 * l2, -1)
    V1 = 2 * np.cross(l2, l1) + 0.5 * (l2 - c[:, None] * l1)
    cc, par, rot = maps.invariant_components(V1, l1, l2)
    s = np.sqrt(1 - c**2)
    np.testing.assert_allclose(cc, c)
    np.testing.assert_allclose(par, 0.5 * s, atol=1e-12)
    np.testing.assert_allclose(rot, -2 * s, atol=1e-12)


def test_function_slice():
    g = maps.lonlat_grid(6, 3)
    f = maps.function_slice(lambda lam: lam[0, 2] * lam[1, 2], g, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(f, np.sin(g.lat), atol=1e-12)


def test_density_rate_slice_of_the_svd_gauge_matches_the_eager_derivative():
    from lhvjax import quantum

    state = jax.tree.map(lambda x: x[0], quantum.random_states(jax.random.key(7), 1, 0.2, "hs"))
    velocity = quantum.bloch_derivative(jnp.asarray(quantum.heisenberg(1.0)), state)
    gauge = get_gauge("svd")
    g = maps.lonlat_grid(6, 3)
    l2 = np.array([0.0, 0.0, 1.0])
    f = maps.density_rate_slice(gauge, state, velocity, g, l2)
    i = (1, 4)
    lam = jnp.stack([jnp.asarray(g.x[i]), jnp.asarray(l2)])
    np.testing.assert_allclose(f[i], gauge.dpdt(state, velocity, lam), rtol=1e-9)
    assert np.abs(f).max() < 10  # |dw/dt| = O(|H| |rho'| / gap), not 1e16
