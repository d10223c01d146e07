"""The Lagrangian form: the flow on the spheres, moments against sign statistics, exact zeros."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems

from lhvjax import fields, harmonics, quantum
from lhvjax.lagrangian import (
    Lagrangian,
    flow,
    odd_moments,
    odd_moments_per_sample,
    quantum_signs,
    sign_values,
)
from lhvjax.residual import Problem, loss, normalized_loss, sample_batch

ROTATION = fields.KnownField(systems.rotation_field(), "rotation")


def _problem(H, gauge="svd", sampling="exact", t_max=1.5):
    form = Lagrangian(degree=3, times=3, t_max=t_max, steps=8, sampling=sampling)
    return Problem(H, gauge, 0.2, formulation=form)


def test_flow_of_the_rotation_field_is_the_rotation():
    lam0 = systems.great_circle(  # any points: a batch of 64 pairs
        jnp.stack([systems.directions(1, 64), systems.directions(2, 64)], 1),
        jnp.zeros((64, 2, 3)),
        0.0,
    )
    times = jnp.array([0.5, 1.0, 2.0])
    out = flow(ROTATION, {}, lam0, times, 2.0, 16)
    for j, t in enumerate(times):
        exact = jnp.stack(
            [
                systems.rodrigues(systems.N1, systems.OMEGA1 * t, lam0[:, 0]),
                systems.rodrigues(systems.N2, systems.OMEGA2 * t, lam0[:, 1]),
            ],
            1,
        )
        np.testing.assert_allclose(out[j], exact, atol=1e-7)  # Tsit5, 16 steps


@pytest.mark.parametrize(
    "gauge,sampling,points", [("svd", "exact", 2048), ("linear", "weighted", 8192)]
)
def test_rotation_field_moves_samples_like_quantum_mechanics(gauge, sampling, points):
    # Theorem 1 in Lagrangian form: the exact field's flowed samples have the quantum odd
    # moments and sign statistics at every time, within their standard errors (weighted
    # samples are shared by the states and noisier: more of them)
    pr = _problem(systems.noninteracting(), gauge, sampling)
    batch = sample_batch(pr, jax.random.key(3), 1, 16, points)
    out = jax.jit(lambda b: normalized_loss(pr, ROTATION, {}, b))(batch)
    for name in ("normalized_loss", "sign_normalized_loss"):
        assert abs(float(out[name])) < 4 * float(out[name + "_stderr"]), name
        assert float(out[name + "_stderr"]) < 0.2  # and the test has power
    zero = jax.jit(lambda b: normalized_loss(pr, fields.zero_field(), {}, b))(batch)
    assert float(zero["normalized_loss"]) == pytest.approx(1.0, abs=4 * 0.1)


def test_odd_moments_of_exact_samples_are_the_quantum_moments():
    s = systems.one(systems.states(9, 1, 0.25), 0)
    lam = pr_sample = systems.gauge("svd").sample(jax.random.key(4), s, 2**16)
    m = odd_moments(pr_sample, 3)
    f = jax.vmap(lambda x: odd_moments(x[None], 3))(lam)
    se = jnp.std(f, 0) / jnp.sqrt(f.shape[0])
    assert bool(jnp.all(jnp.abs(m - harmonics.linear_moments(s, 3)) <= 4.5 * se))


def test_flowed_odd_moments_agree_with_sign_statistics():
    # Funk-Hecke: a sign statistic is a series in the odd moments. The linear gauge moved by
    # a smooth random field is no longer of degree 1, and the degree-5 series of the flowed
    # samples' moments reproduces the directly counted signs (their difference, a weighted
    # Monte Carlo mean, within 4 standard errors) where the degree-1 series does not
    field = fields.MLPField(16, 2)
    params = fields.init_params(field, jax.random.key(5), dtype=jnp.float64)
    params = jax.tree.map(lambda x: x + 0.1 * jnp.ones_like(x), params)  # a field that moves
    s = systems.one(systems.states(10, 1, 0.25), 0)
    lam0 = jax.random.normal(jax.random.key(13), (8192, 2, 3))
    lam0 = lam0 / jnp.linalg.norm(lam0, axis=-1, keepdims=True)
    w0 = jax.vmap(lambda l: systems.gauge("linear").density(s, l))(lam0)
    lam_t = flow(field, params, lam0, jnp.array([0.5]), 0.5, 8)[0]
    assert float(jnp.max(jnp.linalg.norm(lam_t - lam0, axis=-1))) > 0.5  # it moved
    dirs = jnp.stack([systems.directions(11, 4), systems.directions(12, 4)], 1)
    direct = sign_values(lam_t, dirs)  # (n, 3 D)

    def mismatch_in_stderrs(L):
        m = odd_moments_per_sample(lam_t, L)  # (n, M)
        stats = [
            harmonics.sign_from_moments(m, L, *pair)
            for n in dirs
            for pair in ((n[0], None), (None, n[1]), (n[0], n[1]))
        ]
        diff = w0[:, None] * (jnp.stack(stats, -1) - direct)
        se = jnp.std(diff, 0) / jnp.sqrt(diff.shape[0])
        z = jnp.abs(jnp.mean(diff, 0)) / se
        return float(jnp.max(z)), float(jnp.sqrt(jnp.mean(z**2)))

    assert mismatch_in_stderrs(5)[0] < 4
    assert mismatch_in_stderrs(1)[1] > 3  # the higher odd moments matter after the flow
    # and the statistics did change under the flow
    moved = jnp.mean(w0[:, None] * direct, 0) - quantum_signs(s, dirs)
    assert float(jnp.max(jnp.abs(moved))) > 0.05


def test_flow_does_not_depend_on_the_batch():
    # regression: with diffrax's default RecursiveCheckpointAdjoint, 1024 or more points
    # came out different from the same points flowed in a batch of 256 (by up to 1.5 on
    # the sphere, jax 0.10.2 / diffrax 0.7.2 on a CPU); an RK4 reference with 200 steps
    field = fields.MLPField(16, 2)
    params = fields.init_params(field, jax.random.key(5), dtype=jnp.float64)
    params = jax.tree.map(lambda x: x + 0.3 * jnp.ones_like(x), params)
    lam0 = jax.random.normal(jax.random.key(13), (2048, 2, 3))
    lam0 = lam0 / jnp.linalg.norm(lam0, axis=-1, keepdims=True)
    big = flow(field, params, lam0, jnp.array([0.6]), 0.6, 8)[0, :64]
    small = flow(field, params, lam0[:64], jnp.array([0.6]), 0.6, 8)[0]
    np.testing.assert_allclose(big, small, atol=1e-12)
    vf = lambda y, t: fields.values(field, params, y, t)[0]
    y, h = lam0[:64], 0.6 / 200
    for i in range(200):
        t = i * h
        k1 = vf(y, t)
        k2 = vf(y + h / 2 * k1, t + h / 2)
        k3 = vf(y + h / 2 * k2, t + h / 2)
        k4 = vf(y + h * k3, t + h)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    np.testing.assert_allclose(small, y / jnp.linalg.norm(y, axis=-1, keepdims=True), atol=2e-3)
    assert float(jnp.max(jnp.linalg.norm(small - lam0[:64], axis=-1))) > 0.5


def test_gradient_through_the_flow_matches_finite_differences():
    pr = _problem(quantum.heisenberg(1.0), "svd", "exact")
    batch = sample_batch(pr, jax.random.key(6), 1, 4, 64)
    field = fields.MLPField(8, 1, time=True)
    params = fields.init_params(field, jax.random.key(7), dtype=jnp.float64)
    params = jax.tree.map(lambda x: x + 0.1, params)
    f = lambda p: loss(pr, field, p, batch)
    g = jax.grad(f)(params)
    d = jax.tree.map(lambda x: jax.random.normal(jax.random.key(8), x.shape), params)
    h = 1e-5
    shift = lambda e: jax.tree.map(lambda p, v: p + e * v, params, d)
    fd = (f(shift(h)) - f(shift(-h))) / (2 * h)
    jvp = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d), strict=True))
    assert float(jvp) == pytest.approx(float(fd), rel=1e-6)


def test_lagrangian_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="unknown sampling 'bogus'"):
        Lagrangian(sampling="bogus")
    pr = _problem(quantum.heisenberg(1.0), "linear", "exact")
    with pytest.raises(ValueError, match="set lagrangian.sampling = 'weighted'"):
        sample_batch(pr, jax.random.key(0), 1, 2, 8)
