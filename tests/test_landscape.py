"""Landscape tools: exact answers on quadratics and a double well, and the breakdowns of a
real residual loss adding back up to the pooled figure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from systems import heisenberg

from lhvjax import fields, landscape, residual
from lhvjax.residual import Problem, sample_batch

# --- a quadratic with a known Hessian ------------------------------------------------------

TOP = np.array([40.0, 17.0, 9.0, 5.5])


def _quadratic(seed=0):
    """L(x) = 1/2 x^T A x + g^T x + c on a pytree {w: (4, 5), b: (3,)} (n = 23), with A's
    spectrum TOP followed by 19 values in [-1, 2] (an indefinite A: a saddle)."""
    rng = np.random.default_rng(seed)
    n = 23
    eig = np.concatenate([TOP, rng.uniform(-1.0, 2.0, n - TOP.size)])
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (Q * eig) @ Q.T
    g = rng.normal(size=n)
    params = {"w": jnp.asarray(rng.normal(size=(4, 5))), "b": jnp.asarray(rng.normal(size=3))}
    flat = lambda p: jax.flatten_util.ravel_pytree(p)[0]
    Aj, gj = jnp.asarray(A), jnp.asarray(g)

    def loss(p):
        x = flat(p)
        return 0.5 * x @ Aj @ x + gj @ x + 0.3

    return loss, params, A, g, np.sort(eig)[::-1], flat


def test_lanczos_recovers_top_eigenvalues_of_a_quadratic():
    loss, params, A, _, eig, flat = _quadratic()
    res = landscape.hessian_top_eigenvalues(loss, params, k=3, steps=20, key=jax.random.key(1))
    np.testing.assert_allclose(res.eigenvalues, eig[:3], rtol=1e-9)
    assert np.all(res.residuals < 1e-6)
    # Ritz vectors are eigenvectors of A
    for lam, y in zip(res.eigenvalues, res.eigenvectors, strict=True):
        np.testing.assert_allclose(np.linalg.norm(y), 1.0, rtol=1e-10)
        np.testing.assert_allclose(A @ np.asarray(y), lam * np.asarray(y), atol=1e-6)
    # the other end of the Ritz spectrum approximates the most negative eigenvalue
    assert res.ritz_values[-1] == pytest.approx(eig[-1], abs=0.05)


def test_lanczos_with_full_steps_gives_the_whole_spectrum_despite_multiplicities():
    # 10 x 10 with 3 distinct eigenvalues: the Krylov space of one vector is 3-dimensional,
    # so Lanczos breaks down after 3 steps and must restart with fresh vectors
    eig = np.array([5.0, 5.0, 5.0, 2.0, 2.0, 2.0, 2.0, -1.0, -1.0, -1.0])
    Q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(10, 10)))
    A = jnp.asarray((Q * eig) @ Q.T)
    res = landscape.hessian_top_eigenvalues(
        lambda x: 0.5 * x @ A @ x, jnp.ones(10), k=4, steps=10, key=jax.random.key(0)
    )
    np.testing.assert_allclose(res.ritz_values, np.sort(eig)[::-1], atol=1e-9)
    np.testing.assert_allclose(res.eigenvalues, [5, 5, 5, 2], atol=1e-9)


def test_hvp_is_the_hessian_times_v():
    loss, params, A, _, _, flat = _quadratic()
    v = landscape.filter_normalized_direction(jax.random.key(2), params)
    np.testing.assert_allclose(flat(landscape.hvp(loss, params, v)), A @ flat(v), atol=1e-10)


def test_slices_of_a_quadratic_are_exact_parabolas():
    loss, params, A, g, _, flat = _quadratic()
    d1, d2 = landscape.random_directions(jax.random.key(5), params, 2)
    x, u, w = (np.asarray(flat(p)) for p in (params, d1, d2))
    grad = A @ x + g
    alphas = np.linspace(-1.0, 1.0, 9)
    f1 = landscape.slice_1d(loss, params, d1, alphas, batch_size=4)
    expect = float(loss(params)) + alphas * (u @ grad) + 0.5 * alphas**2 * (u @ A @ u)
    np.testing.assert_allclose(f1, expect, rtol=1e-12)

    betas = np.linspace(-0.5, 0.5, 5)
    f2 = landscape.slice_2d(loss, params, d1, d2, alphas, betas)
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    expect2 = (
        float(loss(params))
        + a * (u @ grad)
        + b * (w @ grad)
        + 0.5 * (a**2 * (u @ A @ u) + 2 * a * b * (u @ A @ w) + b**2 * (w @ A @ w))
    )
    assert f2.shape == (9, 5)
    np.testing.assert_allclose(f2, expect2, rtol=1e-12)


def test_basin_width_of_a_parabola():
    a = np.linspace(-2, 2, 401)
    assert landscape.basin_width(a, a**2, 0.25) == pytest.approx(1.0, abs=1e-9)
    assert landscape.basin_width(a, 0 * a, 1.0) == pytest.approx(4.0)  # never leaves


def test_line_between_two_minima_of_a_double_well():
    # L = (x^2 - 1)^2 + |y|^2: minima at x = -1 and x = +1 (y = 0), barrier 1 at x = 0
    def loss(p):
        return (p["x"] ** 2 - 1) ** 2 + jnp.sum(p["y"] ** 2)

    pa = {"x": jnp.asarray(-1.0), "y": jnp.zeros(2)}
    pb = {"x": jnp.asarray(1.0), "y": jnp.zeros(2)}
    ts = np.linspace(-0.25, 1.25, 31)
    f = landscape.interpolate(loss, pa, pb, ts)
    np.testing.assert_allclose(f, ((2 * ts - 1) ** 2 - 1) ** 2, atol=1e-12)
    assert landscape.barrier(ts, f) == pytest.approx(1.0)
    # two points in one convex bowl: no barrier
    g = landscape.interpolate(lambda p: jnp.sum(p["y"] ** 2), pa, pb, ts)
    assert landscape.barrier(ts, g) == pytest.approx(0.0, abs=1e-12)


def test_filter_normalised_directions_match_the_parameters_per_unit():
    params = {
        "Dense_0": {"kernel": jnp.arange(12.0).reshape(3, 4) - 2.0, "bias": jnp.arange(4.0)},
        "Dense_1": {"kernel": jnp.zeros((4, 2)).at[:, 0].set(1.0)},  # second column zero
        "scale": jnp.asarray(3.0),
    }
    d = landscape.filter_normalized_direction(jax.random.key(0), params)
    for k in ("Dense_0", "Dense_1"):
        np.testing.assert_allclose(
            jnp.linalg.norm(d[k]["kernel"], axis=0),
            jnp.linalg.norm(params[k]["kernel"], axis=0),
            rtol=1e-9,
        )
    assert np.all(d["Dense_1"]["kernel"][:, 1] == 0)
    np.testing.assert_allclose(
        jnp.linalg.norm(d["Dense_0"]["bias"]), jnp.linalg.norm(params["Dense_0"]["bias"])
    )
    np.testing.assert_allclose(jnp.abs(d["scale"]), 3.0)
    # different keys, different directions
    e = landscape.filter_normalized_direction(jax.random.key(1), params)
    assert not np.allclose(d["Dense_0"]["kernel"], e["Dense_0"]["kernel"])


# --- a real residual loss -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    problem = Problem(heisenberg(), "svd", 0.2)
    field = fields.MLPField(width=8, depth=1)
    # float64 throughout (a no-op where init_params already gives float64)
    params = fields.init_params(field, jax.random.key(0), dtype=jnp.float64)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    # the initial field is exactly zero (zero output layers): move off it
    d = landscape.filter_normalized_direction(jax.random.key(1), params)
    d = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(2), x.shape), d)
    params = jax.tree.map(lambda p, x: p + x, params, d)
    # G = 2 groups of 5 states
    batch = jax.jit(sample_batch, static_argnums=(0, 2, 3, 4))(problem, jax.random.key(3), 2, 5, 48)
    ref = _jit(residual.normalized_loss, problem, field, params, batch)
    return problem, field, params, batch, ref


def _jit(fn, *args, **kw):
    return jax.jit(lambda p: fn(*args[:2], p, *args[3:], **kw))(args[2])


def test_by_state_breakdown_averages_back_to_the_pooled_figure(real):
    problem, field, params, batch, ref = real
    by = _jit(landscape.loss_by_state, problem, field, params, batch)
    assert by["ratio"].shape == (10,) and by["singular_values"].shape == (10, 3)
    assert 0.05 < float(ref["normalized_loss"]) < 1e3  # a nontrivial field
    np.testing.assert_allclose(by["pooled"], ref["normalized_loss"], rtol=1e-12)
    # the pooled ratio is the L_rho(0)-weighted mean of the per-state ratios ...
    np.testing.assert_allclose(jnp.sum(by["weight"]), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        jnp.sum(by["weight"] * by["ratio"]), ref["normalized_loss"], rtol=1e-12
    )
    # ... the per-state figure their plain mean
    np.testing.assert_allclose(by["per_state_mean"], ref["per_state_normalized_loss"], rtol=1e-12)
    np.testing.assert_allclose(jnp.mean(by["loss"]), ref["loss"], rtol=1e-12)


@pytest.mark.parametrize("coordinate", ["l1.l2", "cos_theta2"])
def test_by_region_breakdown_adds_up(real, coordinate):
    problem, field, params, batch, ref = real
    by = _jit(landscape.loss_by_region, problem, field, params, batch, coordinate, bins=4)
    P = batch.lam.shape[0]
    assert float(jnp.sum(by["count"])) == P
    np.testing.assert_allclose(jnp.sum(by["count"] / P * by["loss"]), ref["loss"], rtol=1e-12)
    np.testing.assert_allclose(by["pooled"], ref["normalized_loss"], rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(by["share_of_loss"]), 1.0, rtol=1e-12)


def test_normalized_loss_fn_and_a_slice_through_the_real_loss(real):
    problem, field, params, batch, ref = real
    ref = ref["normalized_loss"]
    fn = landscape.normalized_loss_fn(problem, field, batch)
    d = landscape.filter_normalized_direction(jax.random.key(7), params)
    f = landscape.slice_1d(fn, params, d, jnp.array([-0.1, 0.0, 0.1]))
    np.testing.assert_allclose(f[1], ref, rtol=1e-12)
    assert np.all(np.isfinite(f))


def test_function_space_line_is_the_residual_of_the_mixed_field(real):
    problem, _, _, batch, _ = real
    n1, n2 = [0.3, 0.1, 1.0], [1.0, -0.2, 0.0]
    rot = fields.rotation_field(0.8, n1, -0.5, n2)
    zero = fields.zero_field()
    ts = jnp.array([0.3, 1.4])
    line = jax.jit(
        lambda b: landscape.function_space_interpolate(problem, zero, {}, rot, {}, b, ts)
    )(batch)
    for t, value in zip(ts, line["normalized_loss"], strict=True):
        mixed = fields.rotation_field(0.8 * float(t), n1, -0.5 * float(t), n2)
        ref = _jit(residual.normalized_loss, problem, mixed, {}, batch)["normalized_loss"]
        np.testing.assert_allclose(value, ref, rtol=1e-10)
    np.testing.assert_allclose(line["L_aa"], 1.0, rtol=1e-12)  # the zero field
    # r_zero - r_rot = -(w div V + V . grad w): its mean square is L_bb - 2 L_ab + 1
    np.testing.assert_allclose(line["distance"], 1 + line["L_bb"] - 2 * line["L_ab"], rtol=1e-10)


def test_resampled_loss_of_the_zero_field_is_one(real):
    problem = real[0]
    q = landscape.resampled_normalized_loss(
        problem, fields.zero_field(), {}, jax.random.key(0), 3, 1, 4, 16
    )
    assert q.shape == (3,)
    np.testing.assert_allclose(q, 1.0, rtol=1e-12)
