"""The weak form: exact zeros and rates by quadrature, integration by parts, unbiased squares."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems

from lhvjax import fields, harmonics, quantum
from lhvjax.residual import (
    Problem,
    block_square,
    normalized_loss,
    residuals,
    sample_batch,
)
from lhvjax.weak import Weak, weak_residuals


def _problem(H, gauge, tests="full"):
    return Problem(H, gauge, 0.2, formulation=Weak(degree=3, tests=tests, blocks=4))


def _quadrature_batch(pr, seed=1):
    lam, w = systems.product_quadrature(6)
    return sample_batch(pr, jax.random.key(seed), 1, 4, 16)._replace(lam=lam), w


@pytest.mark.parametrize("gauge,tests", [("linear", "full"), ("svd", "odd")])
def test_rotation_field_has_zero_weak_residual(gauge, tests):
    # exact by quadrature: the linear density is a polynomial; the svd one's kinks integrate
    # exactly against odd test functions only (the rule's symmetry), so svd is tested on those
    pr = _problem(systems.noninteracting(), gauge, tests)
    batch, w = _quadrature_batch(pr)
    V = fields.KnownField(systems.rotation_field(), "rotation")
    R, D = weak_residuals(pr, V, {}, batch, 3, tests, 1, w)
    assert float(jnp.min(D)) > 1e-5  # the moments do move
    assert float(jnp.max(jnp.abs(R))) < 1e-14


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_odd_rates_are_the_quantum_rates(gauge):
    # the exact rates (a JVP of the gauge's moments) of the odd moments are the
    # gauge-independent ones: linear in rho', the same for every gauge
    G = systems.gauge(gauge)
    S = systems.states(12, 4, 0.2)
    dS = quantum.bloch_derivative(systems.heisenberg(), S)
    A, B = harmonics.pairs(3, "odd")
    rate = lambda s, ds: jax.jvp(lambda x: G.moments(G.prepare(x), 3)[A, B], (s,), (ds,))[1]
    rates = jax.vmap(rate)(S, dS)
    np.testing.assert_allclose(rates, harmonics.linear_moments(dS, 3, "odd"), atol=1e-14)
    assert float(jnp.max(jnp.abs(rates))) > 1e-2


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_moments_are_the_integrals_of_the_density(gauge):
    # Gauge.moments against a quadrature of w Y_A Y_B: exact for the polynomial linear
    # density; the svd density's kinks leave a quadrature error ~ n^-2 (seen: 1.7e-5)
    G = systems.gauge(gauge)
    lam, w = systems.product_quadrature(16)
    Y1, Y2 = harmonics.sh(lam[:, 0], 4), harmonics.sh(lam[:, 1], 4)
    S = systems.states(13, 3, 0.25)
    dens = systems.batched(gauge).density(S, lam)
    quad = jnp.einsum("sp,p,pa,pb->sab", dens, w, Y1, Y2)
    exact = jax.vmap(lambda s: G.moments(G.prepare(s), 4))(S)
    np.testing.assert_allclose(exact, quad, atol=1e-14 if gauge == "linear" else 5e-5)
    assert float(jnp.max(jnp.abs(exact[:, 1:, 1:]))) > 1e-3


def test_weak_residual_is_the_strong_residual_integrated_by_parts():
    # R_phi - E_u[r phi] = -E_u[div(w V phi)], zero by the divergence theorem on the spheres;
    # a random network field, Monte Carlo over 2^14 points, within 4 standard errors
    pr = _problem(quantum.heisenberg(1.0), "svd")
    field = fields.MLPField(16, 2, linear_skip=False)
    params = fields.init_params(field, jax.random.key(3), dtype=jnp.float64)
    params = jax.tree.map(lambda x: x + 0.3 * jnp.ones_like(x), params)  # V != 0
    batch = sample_batch(pr, jax.random.key(4), 1, 2, 2**14)
    r, _ = residuals(pr, field, params, batch)  # (1, S, P)
    R, _ = weak_residuals(pr, field, params, batch, 2, "full", 2**7)  # 128 blocks of 128
    A, B = harmonics.pairs(2, "full")
    x = batch.lam
    phi = harmonics.sh(x[:, 0], 2)[:, A] * harmonics.sh(x[:, 1], 2)[:, B]  # (P, M)
    diff = R.mean(1) - jnp.einsum("sp,pm->sm", r[0], phi) / x.shape[0]  # (S, M)
    per_block = (
        R - jnp.einsum("sbq,bqm->sbm", r[0].reshape(2, 128, 128), phi.reshape(128, 128, -1)) / 128
    )
    se = jnp.std(per_block, axis=1, ddof=1) / jnp.sqrt(128.0)
    assert float(jnp.max(jnp.abs(R.mean(1)))) > 10 * float(jnp.max(se))  # R itself is not ~0
    assert bool(jnp.all(jnp.abs(diff) <= 4 * se + 1e-12))


def test_block_square_is_unbiased():
    # iid blocks with mean mu: E[block_square] = |mu|^2 although E|mean|^2 = |mu|^2 + var / B
    mu = jnp.array([0.3, -0.1, 0.0])
    R = mu + jax.random.normal(jax.random.key(5), (20000, 4, 3))
    est = block_square(R)
    naive = jnp.sum(jnp.mean(R, 1) ** 2, -1)
    target = float(mu @ mu)
    se = float(jnp.std(est) / jnp.sqrt(est.size))
    assert abs(float(jnp.mean(est)) - target) < 4 * se
    assert float(jnp.mean(naive)) - target > 0.5  # 3 / 4 of bias without the blocks


def test_weak_standard_error_is_calibrated():
    # the spread of the held-out ratio over 64 independent grids matches its reported
    # standard error (a random network field, Heisenberg, linear gauge: the svd gauge's heavy
    # tail in 1 / gap makes every s.e. of it optimistic; 16 states x 256 points)
    pr = Problem(quantum.heisenberg(1.0), "linear", 0.2, formulation=Weak(2, "full", 8))
    field = fields.MLPField(16, 2)
    params = fields.init_params(field, jax.random.key(3), dtype=jnp.float64)
    params = jax.tree.map(lambda x: x + 0.2 * jnp.ones_like(x), params)

    def one(key):
        out = normalized_loss(pr, field, params, sample_batch(pr, key, 1, 16, 256))
        return out["normalized_loss"], out["normalized_loss_stderr"]

    q, se = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(6), 64))
    assert float(jnp.std(q)) == pytest.approx(float(jnp.mean(se)), rel=0.35)


def test_weak_held_out_figures(f32):
    pr = _problem(systems.noninteracting(), "svd")
    batch = sample_batch(pr, jax.random.key(7), 2, 8, 256)
    zero = normalized_loss(pr, fields.zero_field(), {}, batch)
    exact = normalized_loss(pr, fields.KnownField(systems.rotation_field(), "r"), {}, batch)
    assert float(zero["normalized_loss"]) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(exact["normalized_loss"])) < 4 * float(exact["normalized_loss_stderr"])
    assert exact["loss"].dtype == jnp.float32


def test_weak_form_refuses_bad_settings():
    with pytest.raises(ValueError, match="unknown set of test functions"):
        Weak(tests="even")
    with pytest.raises(ValueError, match="blocks must be at least 2"):
        Weak(blocks=1)
    pr = _problem(systems.noninteracting(), "svd")
    batch = sample_batch(pr, jax.random.key(8), 1, 2, 30)
    with pytest.raises(ValueError, match="30 points do not split into 4 blocks"):
        weak_residuals(pr, fields.zero_field(), {}, batch, 3, "full", 4)


@pytest.mark.parametrize("degree", [1, 2])
def test_jitted_weak_residuals_equal_eager(f32, degree):
    # regression: broadcasting the div V term to every state before its einsum made XLA's
    # CPU backend return garbage at degree 1 (values up to 1e33 and NaN, changing between
    # runs) for a state-independent field, float32, 16 states
    pr = Problem(quantum.heisenberg(1.0), "svd", 0.2, formulation=Weak(degree, "full", 8))
    field = fields.MLPField(16, 2)
    params = fields.init_params(field, jax.random.key(9), dtype=jnp.float32)
    params = jax.tree.map(lambda x: x + 0.1 * jnp.ones_like(x), params)
    batch = sample_batch(pr, jax.random.key(10), 2, 16, 256, jnp.float32)
    f = lambda p, b: weak_residuals(pr, field, p, b, degree, "full", 8)
    R_jit, D_jit = jax.jit(f)(params, batch)
    R, D = f(params, batch)
    assert bool(jnp.all(jnp.isfinite(R_jit)))
    scale = float(jnp.max(jnp.abs(R)))
    np.testing.assert_allclose(R_jit, R, atol=1e-5 * scale)
    np.testing.assert_allclose(D_jit, D, rtol=1e-5)
