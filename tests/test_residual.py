"""The strong-form residual: analytic zeros, linearity in V, and its error bars."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lhvjax import fields, quantum
from lhvjax.residual import Problem, normalized_loss, ratio_with_stderr, residuals, sample_batch

N1, N2 = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0])
W1, W2 = 1.0, 0.7


def free_problem(gauge, t_max=0.0):
    return Problem(quantum.noninteracting(W1, N1, W2, N2), gauge, 0.2, t_max=t_max)


@pytest.mark.parametrize("gauge", ["svd", "linear"])
@pytest.mark.parametrize("t_max", [0.0, 2.0])
def test_rotation_field_has_zero_residual(gauge, t_max):
    # Theorem 1: each Bloch vector precesses, and so does the density; the rigid rotation
    # V_k = omega_k n_k x l_k carries it exactly, in every covariant gauge.
    pr = free_problem(gauge, t_max)
    batch = sample_batch(pr, jax.random.key(1), 2, 16, 128)
    r, dw = residuals(pr, fields.rotation_field(W1, N1, W2, N2), {}, batch)
    assert float(jnp.mean(dw**2)) > 1e-3  # the densities do move
    assert float(jnp.max(jnp.abs(r))) < 1e-12


def test_rotation_field_float32(f32):
    pr = free_problem("svd")
    batch = sample_batch(pr, jax.random.key(2), 1, 16, 128)
    out = normalized_loss(pr, fields.rotation_field(W1, N1, W2, N2), {}, batch)
    assert out["loss"].dtype == jnp.float32
    assert float(out["normalized_loss"]) < 1e-8


def test_zero_field_normalises_to_one():
    pr = Problem(quantum.heisenberg(1.0), "svd", 0.2)
    batch = sample_batch(pr, jax.random.key(3), 1, 8, 64)
    out = normalized_loss(pr, fields.zero_field(), {}, batch)
    np.testing.assert_allclose(float(out["normalized_loss"]), 1.0, rtol=1e-12)


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_probability_is_conserved(gauge):
    # d/dt of the normalisation: the uniform mean of dw/dt vanishes (within 4 s.e.).
    pr = Problem(quantum.heisenberg(1.0), gauge, 0.2)
    batch = sample_batch(pr, jax.random.key(4), 1, 4, 20000)
    _, dw = residuals(pr, fields.zero_field(), {}, batch)
    m = dw[0].mean(-1)
    se = dw[0].std(-1) / np.sqrt(dw.shape[-1])
    assert np.all(np.abs(m) < 4 * se)


def test_residual_is_affine_in_the_field():
    pr = Problem(quantum.heisenberg(1.0), "linear", 0.2)
    batch = sample_batch(pr, jax.random.key(5), 1, 4, 32)
    f = fields.MLPField(width=8, depth=2)
    p1 = f.init(jax.random.key(6), jnp.ones((2, 3)), jnp.zeros(()))
    p1 = jax.tree.map(lambda x: x + 0.1, p1)  # move the zero-initialised output layer
    rot = fields.rotation_field(W1, N1, W2, N2)
    r_net, dw = residuals(pr, f, p1, batch)
    r_rot, _ = residuals(pr, rot, {}, batch)
    both = fields.KnownField(lambda lam: f.apply(p1, lam, jnp.zeros(())) + rot(lam), "sum")
    r_sum, _ = residuals(pr, both, {}, batch)
    np.testing.assert_allclose(r_sum - dw, (r_net - dw) + (r_rot - dw), atol=1e-12)


def test_deeponet_matches_direct_evaluation():
    # the separable evaluation (trunk once per point) equals evaluating V(lambda, rho)
    # and its divergence state by state
    from lhvjax.sphere import uniform, value_and_div

    f = fields.DeepONetField(width=8, depth=2, modes=5)
    feats = jax.random.normal(jax.random.key(7), (3, 6))
    params = f.init(jax.random.key(8), jnp.ones((2, 3)), feats[0])
    lam = uniform(jax.random.key(9), 11)
    V, div = fields.evaluate(f, params, lam, None, feats)
    for s in range(3):
        for p in range(11):
            v, d = value_and_div(lambda x, s=s: f.apply(params, x, feats[s]), lam[p])
            np.testing.assert_allclose(V[s, p], v, atol=1e-12)
            np.testing.assert_allclose(div[s, p], d, atol=1e-12)


def test_ratio_stderr_covers_the_truth():
    # grid data with a row effect, a column effect and noise; the true ratio is 2.
    # Over 200 seeds the 2-sigma interval should cover the truth about 95% of the time.
    def draw(key):
        kr, kc, kn = jax.random.split(key, 3)
        den = 1 + 0.5 * jax.random.uniform(kr, (64, 1)) + 0.5 * jax.random.uniform(kc, (1, 96))
        num = 2 * den + 0.3 * jax.random.normal(kn, (64, 96)) + 0.2 * jax.random.normal(kr, (64, 1))
        return ratio_with_stderr(num, den)

    q, se = jax.vmap(draw)(jax.random.split(jax.random.key(10), 200))
    coverage = float(jnp.mean(jnp.abs(q - 2) < 2 * se))
    assert 0.88 < coverage < 0.995, coverage  # binomial(200, 0.95): 4 s.d. is about 0.06


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_float32_matches_float64(gauge):
    # the same batch and parameters, evaluated in both precisions (tolerance: 1e-4 relative)
    pr = Problem(quantum.heisenberg(1.0), gauge, 0.2)
    f = fields.MLPField(width=16, depth=2)
    batch = sample_batch(pr, jax.random.key(11), 1, 32, 256)
    params = f.init(jax.random.key(12), jnp.ones((2, 3)), jnp.zeros(()))
    params = jax.tree.map(lambda x: x + 0.05, params)
    out64 = normalized_loss(pr, f, params, batch)
    with jax.enable_x64(False):
        to32 = lambda t: jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float32), t)
        out32 = normalized_loss(pr, f, to32(params), to32(batch))
        assert out32["loss"].dtype == jnp.float32
    for k in ("normalized_loss", "loss_zero_field"):
        np.testing.assert_allclose(float(out32[k]), float(out64[k]), rtol=1e-4)
