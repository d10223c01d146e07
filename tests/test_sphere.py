"""Geometry on (S^2)^N (lhvjax.sphere), float64 unless stated."""

import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems

from lhvjax import sphere


def jv(f):
    """jit(vmap(f)): one compilation instead of one per primitive (much faster on CPU)."""
    return jax.jit(jax.vmap(f))


def test_area():
    assert sphere.area(1) == pytest.approx(4 * math.pi)
    assert sphere.area(2) == pytest.approx(16 * math.pi**2)


# --- sampling -------------------------------------------------------------------------------


def test_uniform_points_are_uniform():
    n = 2**16
    x = sphere.uniform(jax.random.key(0), n, 2)
    assert x.shape == (n, 2, 3) and x.dtype == jnp.float64
    np.testing.assert_allclose(jnp.linalg.norm(x, axis=-1), 1, atol=1e-14)
    # E[x] = 0 and E[x x^T] = 1/3 per sphere, and the spheres are independent: E[x1 x2^T] = 0
    for f, exact in [
        (x, np.zeros((2, 3))),
        (x[:, :, :, None] * x[:, :, None, :], np.broadcast_to(np.eye(3) / 3, (2, 3, 3))),
        (x[:, 0, :, None] * x[:, 1, None, :], np.zeros((3, 3))),
    ]:
        mean, se = np.mean(f, 0), np.std(f, 0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(mean - exact) <= 4 * se)


def test_uniform_float32(f32):
    x = sphere.uniform(jax.random.key(0), 10, 3)
    assert x.shape == (10, 3, 3) and x.dtype == jnp.float32
    np.testing.assert_allclose(jnp.linalg.norm(x, axis=-1), 1, atol=1e-6)


def _smooth(x):
    """exp(c1.x1 + c2.x2) with mean over (S^2)^2 equal to prod sinh|c_k| / |c_k|."""
    c = jnp.array([[0.8, -0.3, 0.5], [0.1, 0.9, -0.6]])
    return jnp.exp(jnp.sum(c * x, axis=(-1, -2))), float(
        np.prod([np.sinh(k) / k for k in np.linalg.norm(c, axis=-1)])
    )


def test_sobol_points():
    n = 4096
    x = sphere.sobol(n, 2, seed=1)
    assert x.shape == (n, 2, 3)
    np.testing.assert_allclose(jnp.linalg.norm(x, axis=-1), 1, atol=1e-14)
    np.testing.assert_array_equal(x, sphere.sobol(n, 2, seed=1))  # reproducible
    assert sphere.sobol(5, 1).shape == (5, 1, 3)  # n need not be a power of two
    # a smooth integrand: the quasi-random error beats the iid standard error by far
    for seed in range(3):
        f, exact = _smooth(sphere.sobol(n, 2, seed=seed))
        g, _ = _smooth(sphere.uniform(jax.random.key(seed), n, 2))
        iid_se = float(jnp.std(g) / np.sqrt(n))
        assert abs(float(jnp.mean(f)) - exact) < iid_se / 10
    with pytest.raises(ValueError, match="need n > 0 points; got 0"):
        sphere.sobol(0)


# --- tangent fields and surface operators ------------------------------------------------------


def _mlp_field(seed, n_spheres=2, radial=False):
    """A random smooth tangent field on (S^2)^N that couples the spheres.

    radial=False: the tangent(...) construction, constant along rays.
    radial=True: project(x, f(x)) with unnormalised x, which is tangent only on the sphere
    (its ambient Jacobian has a radial part that a correct surface divergence ignores).
    """
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    d = 3 * n_spheres
    W1 = jax.random.normal(k1, (16, d))
    b1 = jax.random.normal(k2, (16,))
    W2 = jax.random.normal(k3, (d, 16)) / 4

    def f(x):
        return (W2 @ jnp.tanh(W1 @ x.reshape(-1) + b1)).reshape(x.shape) + x[::-1] ** 2

    if radial:
        return lambda x: sphere.project(x, f(x))
    return sphere.tangent(f)


def test_tangent_fields_are_tangent():
    x = sphere.uniform(jax.random.key(1), 64, 2)
    for V in (_mlp_field(0), _mlp_field(0, radial=True), systems.rotation_field()):
        v = jv(V)(x)
        np.testing.assert_allclose(jnp.sum(v * x, -1), 0, atol=1e-13)
    # tangent() is constant along rays
    V = _mlp_field(0)
    np.testing.assert_allclose(jv(V)(2.5 * x), jv(V)(x), atol=1e-13)


def test_rotation_fields_are_divergence_free():
    x = sphere.uniform(jax.random.key(2), 64, 2)
    div = jv(lambda y: sphere.surface_div(systems.rotation_field(), y))(x)
    np.testing.assert_allclose(div, 0, atol=1e-12)
    # also a general infinitesimal rotation per sphere, made tangent through tangent()
    A = jax.random.normal(jax.random.key(3), (2, 3, 3))
    A = A - jnp.swapaxes(A, -1, -2)
    V = sphere.tangent(lambda y: jnp.einsum("kij,kj->ki", A, y))
    div = jv(lambda y: sphere.surface_div(V, y))(x)
    np.testing.assert_allclose(div, 0, atol=1e-12)


def _harmonic(l, seed):
    """A random real combination of the degree-l harmonics, unit-normalised on S^2."""
    c = jax.random.normal(jax.random.key(seed), (9,))[: 2 * l + 1]
    c = c / jnp.linalg.norm(c)
    return lambda y: e3nn.sh(l, y, normalize=True, normalization="integral") @ c


def test_e3nn_harmonics_are_orthonormal():
    """The convention assumed below: integral normalisation, int Y_lm Y_l'm' = delta."""
    x = sphere.sobol(2**14, 1, seed=3)[:, 0]
    Y = e3nn.sh([1, 2], x, normalize=True, normalization="integral")  # (n, 8)
    gram = 4 * np.pi * (Y.T @ Y) / len(x)
    np.testing.assert_allclose(gram, np.eye(8), atol=2e-3)


@pytest.mark.parametrize("l", [1, 2, 3, 4])
def test_laplacian_of_harmonics_on_one_sphere(l):
    Y = _harmonic(l, l)
    f = lambda x: Y(x[0])
    lap = lambda x: sphere.surface_div(lambda y: sphere.surface_grad(f, y), x)
    x = sphere.uniform(jax.random.key(l), 64, 1)
    np.testing.assert_allclose(jv(lap)(x), -l * (l + 1) * jv(f)(x), atol=1e-6)


@pytest.mark.parametrize("l1,l2", [(1, 1), (1, 2), (3, 2), (4, 3)])
def test_laplacian_of_harmonic_products_on_two_spheres(l1, l2):
    Y1, Y2 = _harmonic(l1, 10 + l1), _harmonic(l2, 20 + l2)
    f = lambda x: Y1(x[0]) * Y2(x[1])
    lap = lambda x: sphere.surface_div(lambda y: sphere.surface_grad(f, y), x)
    x = sphere.uniform(jax.random.key(7), 64, 2)
    lam = l1 * (l1 + 1) + l2 * (l2 + 1)
    np.testing.assert_allclose(jv(lap)(x), -lam * jv(f)(x), atol=1e-6)


def test_divergence_ignores_the_extension_off_the_sphere():
    """surface_div uses tangential derivatives only: extensions that agree on the sphere
    (the ray-constant one and project(x, f(x)) with unnormalised x) give the same value,
    while their full ambient Jacobian traces differ (so the test would see a missing P)."""
    V1, V2 = _mlp_field(4), _mlp_field(4, radial=True)
    x = sphere.uniform(jax.random.key(5), 64, 2)
    d1 = jv(lambda y: sphere.surface_div(V1, y))(x)
    d2 = jv(lambda y: sphere.surface_div(V2, y))(x)
    np.testing.assert_allclose(d1, d2, atol=1e-12)
    amb = jv(lambda y: jnp.trace(jax.jacfwd(V2)(y).reshape(6, 6)))(x)
    assert np.max(np.abs(amb - d2)) > 0.1


def test_value_and_div_matches_surface_div():
    V = _mlp_field(6, radial=True)
    x = sphere.uniform(jax.random.key(6), 64, 2)
    v, d = jv(lambda y: sphere.value_and_div(V, y))(x)
    np.testing.assert_allclose(v, jv(V)(x), atol=1e-14)
    np.testing.assert_allclose(d, jv(lambda y: sphere.surface_div(V, y))(x), atol=1e-12)
    # extra arguments are passed through
    Vs = lambda y, s: s * V(y)
    _, d3 = sphere.value_and_div(Vs, x[0], 3.0)
    np.testing.assert_allclose(d3, 3 * d[0], atol=1e-12)
    np.testing.assert_allclose(sphere.surface_div(Vs, x[0], 3.0), 3 * d[0], atol=1e-12)


def test_surface_div_three_spheres_and_divergence_theorem():
    """On (S^2)^3, the mean of div V over uniform points is 0 (no boundary), within 4 se."""
    V = _mlp_field(8, n_spheres=3)
    x = sphere.uniform(jax.random.key(8), 4096, 3)
    d = jv(lambda y: sphere.surface_div(V, y))(x)
    assert abs(float(jnp.mean(d))) <= 4 * float(jnp.std(d)) / 64
    assert float(jnp.std(d)) > 0.5  # a nontrivial field


def test_hutchinson_is_unbiased():
    V = _mlp_field(9, radial=True)
    x = sphere.uniform(jax.random.key(9), 64, 2)[:3]
    exact = jv(lambda y: sphere.surface_div(V, y))(x)
    keys = jax.random.split(jax.random.key(10), 20000)
    probe = jax.jit(
        jax.vmap(jax.vmap(lambda y, k: sphere.hutchinson_div(V, y, k), (None, 0)), (0, None))
    )
    est = probe(x, keys)  # (3 points, 20000 single-probe estimates)
    mean, se = jnp.mean(est, 1), jnp.std(est, 1) / np.sqrt(keys.shape[0])
    assert np.all(np.abs(mean - exact) <= 4 * se), (mean, exact, se)
    assert np.all(se < 0.05 * (1 + np.abs(exact)))  # the check has teeth
    # several probes per call average them; extra args reach the field
    Vs = lambda y, s: s * V(y)
    many = sphere.hutchinson_div(Vs, x[0], jax.random.key(11), 4000, 2.0)
    exact = 2 * float(sphere.surface_div(V, x[0]))
    assert abs(float(many) - exact) < 0.2 * (1 + abs(exact))


def test_surface_gradient_against_finite_differences():
    Y1, Y2 = _harmonic(2, 30), _harmonic(3, 31)
    f = lambda x: Y1(x[0]) * Y2(x[1]) + jnp.sin(x[0] @ x[1])
    x = sphere.uniform(jax.random.key(12), 64, 2)
    tau = sphere.normalize(sphere.project(x, jax.random.normal(jax.random.key(13), x.shape)))
    g = jv(lambda y: sphere.surface_grad(f, y))(x)
    np.testing.assert_allclose(jnp.sum(g * x, -1), 0, atol=1e-13)  # tangent
    h = 1e-5  # central difference: truncation ~ h^2, rounding ~ 1e-16 / h
    for k in range(2):  # move one sphere at a time along a great circle
        mask = jnp.zeros((2, 1)).at[k].set(1.0)
        plus = systems.great_circle(x, tau, h * mask)
        minus = systems.great_circle(x, tau, -h * mask)
        fd = (jv(f)(plus) - jv(f)(minus)) / (2 * h)
        np.testing.assert_allclose(fd, jnp.sum(g[:, k] * tau[:, k], -1), atol=1e-8)


def test_wrongly_shaped_points_are_refused():
    V = _mlp_field(0)
    key = jax.random.key(0)
    for bad in (jnp.ones(3), jnp.ones((2, 2)), jnp.ones((4, 2, 3))):
        with pytest.raises(ValueError, match=r"an \(N, 3\) array; got shape"):
            sphere.surface_div(V, bad)
        with pytest.raises(ValueError, match=r"an \(N, 3\) array; got shape"):
            sphere.value_and_div(V, bad)
        with pytest.raises(ValueError, match=r"an \(N, 3\) array; got shape"):
            sphere.hutchinson_div(V, bad, key)
