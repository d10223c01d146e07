"""The least-squares floor: basis geometry, the solver, and the two physical anchors.

Anchors: the noninteracting control has an exact state-independent field (a rigid
rotation, in the K = 1 span), so its floor vanishes to rounding; the Heisenberg floor
cannot (App. C of the paper shows that no state-independent field solves the continuity
equation at t = 0, in the svd gauge, and its argument - stationary states with a = b and
symmetric T force div V = 0 and eq. (42), hence V = 0 - goes through unchanged for the
linear gauge). At K = 1 it is even exactly 1 in the population: H commutes with every
U x U, so the loss is invariant under global rotations, and by convexity the best K = 1
field can be taken rotation-equivariant; no degree-1 field is, so the best is V = 0.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lhvjax import cli, config, floor
from lhvjax.fields import rotation_field
from lhvjax.residual import ratio_with_stderr, sample_batch
from lhvjax.sphere import surface_div, uniform

SMALL = [
    "train.states=16",
    "train.points=128",
    "train.times=2",
    "eval.states=16",
    "eval.points=128",  # = train.points: one compiled evaluation serves both
    "eval.times=2",
]


def small_cfg(hamiltonian, gauge, *extra):
    return config.load(
        None, [f"physics.hamiltonian={hamiltonian}", f"physics.gauge={gauge}", *SMALL, *extra]
    )


def numeric_divs(basis, lam):
    """Surface divergence of every basis field by jacfwd (sphere.surface_div)."""
    idx = jnp.arange(basis.n_spatial)
    one = lambda x: jax.vmap(lambda i: surface_div(lambda y: basis.spatial(y)[0][i], x))(idx)
    return jax.jit(jax.vmap(one))(lam)


@pytest.mark.parametrize("K, size", [(1, 12), (2, 68), (3, 216), (4, 520)])
def test_basis_sizes(K, size):
    b = floor.HarmonicBasis(K)
    assert b.size == floor.basis_size(K) == size == len(b.labels())
    assert floor.InvariantBasis(K).size == floor.basis_size(K, kind="invariant") == 4 * (K // 2)
    assert floor.HarmonicBasis(K, 2, t_max=1.0).size == 3 * size


@pytest.mark.parametrize("kind", ["harmonic", "invariant"])
def test_basis_fields_are_tangent_with_the_right_divergence(kind):
    basis = floor.make_basis(kind, 3 if kind == "harmonic" else 6)
    lam = uniform(jax.random.key(3), 6)
    V, div = jax.vmap(basis.spatial)(lam)
    assert V.shape == (6, basis.size, 2, 3)
    assert float(jnp.max(jnp.abs(jnp.sum(V * lam[:, None], -1)))) < 1e-12
    assert float(jnp.max(jnp.abs(V))) > 0.1  # not trivially tangent
    np.testing.assert_allclose(div, numeric_divs(basis, lam), atol=1e-10)


def test_invariant_basis_is_equivariant_and_inside_the_harmonic_span():
    inv, har = floor.InvariantBasis(4), floor.HarmonicBasis(4)
    lam = uniform(jax.random.key(4), 64)
    R = jnp.asarray(Rotation.random(random_state=2).as_matrix())
    V, div = jax.vmap(inv.spatial)(lam)
    VR, divR = jax.vmap(inv.spatial)(lam @ R.T)
    np.testing.assert_allclose(VR, V @ R.T, atol=1e-12)
    np.testing.assert_allclose(divR, div, atol=1e-12)
    # every invariant field (values and divergence) is a combination of harmonic ones
    Vh, dh = jax.vmap(har.spatial)(lam)
    X = np.concatenate([np.moveaxis(Vh, 1, -1).reshape(-1, har.size), dh])
    Y = np.concatenate([np.moveaxis(V, 1, -1).reshape(-1, inv.size), div])
    c, *_ = np.linalg.lstsq(X, Y, rcond=None)
    assert np.max(np.abs(X @ c - Y)) < 1e-10


def test_rigid_rotations_are_in_the_K1_span():
    basis = floor.HarmonicBasis(1)
    lam = uniform(jax.random.key(5), 32)
    rot = rotation_field(0.7, [1.0, 2.0, -0.5], -1.1, [-0.3, 0.4, 1.0])
    target = np.asarray(jax.vmap(rot)(lam)).reshape(-1)
    X = np.moveaxis(np.asarray(jax.vmap(basis.spatial)(lam)[0]), 1, -1).reshape(-1, basis.size)
    c, *_ = np.linalg.lstsq(X, target, rcond=None)
    assert np.max(np.abs(X @ c - target)) < 1e-12


def test_solver_recovers_known_coefficients_and_handles_redundancy():
    rng = np.random.default_rng(0)
    c_true = rng.normal(size=7)
    ne = floor.NormalEquations.zeros(7)
    blocks = []
    for _ in range(3):
        A = rng.normal(size=(50, 7)) * np.array([1, 10, 0.1, 1, 1, 1e3, 1])
        ne = ne.add(jnp.asarray(A), jnp.asarray(-A @ c_true))
        blocks.append(A)
    sol = floor.solve(ne)
    np.testing.assert_allclose(sol.c, c_true, rtol=1e-10)
    assert sol.rank == 7 and abs(sol.train_quadratic) < 1e-12

    # a duplicated column: one eigenvalue falls under the cut-off, the fit stays exact
    A = np.concatenate(blocks)
    A2 = np.concatenate([A, A[:, :1]], 1)
    dw = rng.normal(size=len(A))
    sol2 = floor.solve(floor.NormalEquations.zeros(8).add(jnp.asarray(A2), jnp.asarray(dw)))
    assert sol2.rank == 7
    ref, *_ = np.linalg.lstsq(A, -dw, rcond=None)
    np.testing.assert_allclose(A2 @ sol2.c, A @ ref, rtol=1e-9, atol=1e-12)
    loss = np.sum((dw + A2 @ sol2.c) ** 2) / np.sum(dw**2)
    assert sol2.train_quadratic == pytest.approx(loss, rel=1e-10)


def test_batched_accumulation_equals_a_one_shot_solve():
    with jax.enable_x64(True):
        problem = config.build_problem(small_cfg("heisenberg", "linear"))
        basis = floor.HarmonicBasis(2)
        keys = floor.training_keys(0, 3)
        ne = floor.accumulate(problem, basis, keys, 1, 8, 64)
        sol = floor.solve(ne)
        one = jax.jit(lambda k: floor.design(problem, basis, sample_batch(problem, k, 1, 8, 64)))
        blocks = [one(k) for k in keys]
    A = np.concatenate([np.asarray(a).reshape(-1, basis.size) for a, _ in blocks])
    dw = np.concatenate([np.asarray(d).reshape(-1) for _, d in blocks])
    assert int(ne.n) == len(dw) == 3 * 8 * 64
    ref, *_ = np.linalg.lstsq(A, -dw, rcond=None)
    np.testing.assert_allclose(sol.c, ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
    loss = np.sum((dw + A @ ref) ** 2) / np.sum(dw**2)
    assert sol.train_quadratic == pytest.approx(loss, rel=1e-9)


def test_pooled_ratio_of_one_grid_is_ratio_with_stderr():
    rng = np.random.default_rng(1)
    num, den = rng.random((12, 30)), 1 + rng.random((12, 30))
    q, se = ratio_with_stderr(jnp.asarray(num), jnp.asarray(den))
    q1, se1 = floor.pooled_ratio([(num, den)])
    assert q1 == pytest.approx(float(q), rel=1e-12) and se1 == pytest.approx(float(se), rel=1e-12)
    # two grids: the mean ratio pools the cells, the error shrinks
    q2, se2 = floor.pooled_ratio([(num, den), (num[::-1], den[::-1])])
    assert q2 == pytest.approx(float(q), rel=1e-12) and se2 < se1


def test_training_and_heldout_keys_differ():
    held = jax.random.key_data(floor.heldout_key(config.EvalConfig().seed))
    for k in floor.training_keys(config.TrainConfig().seed, 64):
        assert not np.array_equal(jax.random.key_data(k), held)


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_noninteracting_floor_vanishes_at_K1(gauge):
    r = floor.run_floor(small_cfg("noninteracting", gauge), 1, batches=2)
    assert r["basis_size"] == 12 and r["rank"] == 12
    assert r["normalized_loss"] <= 1e-8
    assert r["train_normalized_loss"] <= 1e-8
    assert r["heldout_loss_zero_field"] > 1e-3  # the states do move


def test_noninteracting_time_dependent_floor_vanishes():
    cfg = small_cfg("noninteracting", "linear", "field.t_max=2.0")
    r = floor.run_floor(cfg, 1, batches=1, time_degree=1)
    assert r["basis_size"] == 24 and r["samples"]["train"]["groups"] == 2
    assert r["normalized_loss"] <= 1e-8


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_heisenberg_floor_at_K1_is_far_from_zero(gauge):
    # population value exactly 1 (module doc); finite samples scatter around it
    r = floor.run_floor(small_cfg("heisenberg", gauge), 1, batches=2)
    assert r["normalized_loss"] > 0.5
    assert r["train_normalized_loss"] > 0.5
    assert r["train_normalized_loss"] <= 1 + 1e-12  # V = 0 is in the span


def test_invariant_floor_is_a_restriction_of_the_harmonic_one():
    cfg = small_cfg("heisenberg", "linear")
    har = floor.run_floor(cfg, 2, batches=2, train_eval=False)
    inv = floor.run_floor(cfg, 2, batches=2, basis="invariant", train_eval=False)
    assert inv["basis_size"] == 4
    # same training samples, nested spans
    assert har["train_normalized_loss_quadratic"] <= inv["train_normalized_loss_quadratic"] + 1e-12
    assert inv["normalized_loss"] < 0.9  # degree 2 holds the exchange precession l2 x l1
    with pytest.raises(config.ConfigError, match="commutes"):
        floor.run_floor(small_cfg("noninteracting", "linear"), 2, basis="invariant")


def test_cli_floor_writes_summary(tmp_path, capsys):
    args = ["floor", "--degree", "1", "--batches", "1", "--out", str(tmp_path), "--quiet"]
    args += [a for s in ["physics.hamiltonian=noninteracting", *SMALL] for a in ("--set", s)]
    assert cli.main(args) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    for key in ("normalized_loss", "normalized_loss_stderr", "train_normalized_loss", "rank"):
        assert key in s
    assert s["basis_size"] == 12 and s["samples"]["train"]["states"] == 16
    assert s["config"]["physics"]["hamiltonian"] == "noninteracting"
    assert s["eigenvalue_cutoff_relative"] == 1e-10 and s["peak_memory_mb"] > 0
    assert s["normalized_loss"] <= 1e-8
    assert "held-out L(V)/L(0)" in capsys.readouterr().out
    assert cli.main(["floor", "--degree", "0", "--quiet", "--out", str(tmp_path)]) == 2


# --- the per-state reference (a state-dependent field fitted to one state at a time) ----------

PER_STATE = dict(states=4, fit_points=192, eval_points=160, chunk=3)  # 2 chunks, one padded


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_noninteracting_per_state_floor_vanishes_at_K1(gauge):
    r = floor.per_state_floor(small_cfg("noninteracting", gauge), 1, **PER_STATE)
    assert r["kind"] == "per_state" and r["basis_size"] == 12
    assert r["normalized_loss"] <= 1e-8 and r["train_normalized_loss"] <= 1e-8
    assert r["per_state_normalized_loss"] <= 1e-8
    assert r["heldout_loss_zero_field"] > 1e-3  # the states do move
    assert r["check_max_abs_diff_relative"] < 1e-10  # jacfwd divergence agrees


def test_heisenberg_per_state_floor_is_far_below_the_state_independent_one():
    # Linear gauge: w = 1 + 2 a.l1 + 2 b.l2 + 4 l1.T l2 and dw/dt is the same polynomial in
    # (a', b', T'). For one state, V = grad phi with (Laplacian) phi = -dw/dt solves
    # dw/dt + div V = 0 and lies in the K = 2 span (grad_1 + grad_2 of Y_1(l1) Y_1(l2));
    # what is left, (w - 1) div V + V . grad w, is second order in the visibility, so
    # L_rho / L_rho(0) = O(v^2) (~0.02 at v = 0.2). A state-independent field must serve
    # every state with one V, and for Heisenberg no field does (App. C): ~0.55 at K = 2.
    cfg = small_cfg("heisenberg", "linear")
    per = floor.per_state_floor(cfg, 2, states=6, fit_points=256, eval_points=256)
    ind = floor.run_floor(cfg, 2, batches=2, train_eval=False)
    assert per["normalized_loss"] < 0.1 and per["per_state_normalized_loss"] < 0.1
    assert ind["normalized_loss"] > 0.3
    assert per["normalized_loss"] < ind["normalized_loss"] / 5
    assert per["check_max_abs_diff_relative"] < 1e-10


def test_per_state_fit_is_each_states_own_least_squares_and_chunking_is_invisible():
    cfg = small_cfg("heisenberg", "svd")
    kw = dict(fit_points=96, eval_points=64, check_states=0)
    r = floor.per_state_floor(cfg, 1, states=5, chunk=2, **kw)
    r1 = floor.per_state_floor(cfg, 1, states=5, chunk=5, **kw)
    np.testing.assert_allclose(r["_coefficients"], r1["_coefficients"], rtol=1e-9, atol=1e-12)
    # the states are the first ones of the neural runs' held-out set, fitted one by one
    with jax.enable_x64(True):
        problem = config.build_problem(cfg)
        ev = cfg.eval
        held = sample_batch(problem, floor.heldout_key(ev.seed), ev.times, ev.states, ev.points)
        st, vel = floor._flat_states(held, 5)
        lam = uniform(floor.per_state_keys(ev.seed)[0], kw["fit_points"])
        basis = floor.HarmonicBasis(1)
        values, divs = jax.vmap(basis.spatial)(lam)
        prep, dprep = jax.vmap(problem.gauge.prepare_jvp)(st, vel)
        A, dw = floor._state_design(problem, prep, dprep, lam, values, divs)
    for s in (0, 4):
        ref, *_ = np.linalg.lstsq(np.asarray(A[s]), -np.asarray(dw[s]), rcond=None)
        np.testing.assert_allclose(r["_coefficients"][s], ref, rtol=1e-7, atol=1e-10)
    assert np.allclose(st.T[0], held.states.T[0, 0]) and np.allclose(st.T[4], held.states.T[0, 4])
    assert len(r["states_normalized_loss"]) == 5 and r["train_quadratic_max_abs_diff"] < 1e-10
    with pytest.raises(config.ConfigError, match="exceeds"):
        floor.per_state_floor(cfg, 1, states=10_000)


def test_cli_floor_per_state_writes_summary(tmp_path, capsys):
    args = ["floor", "--degree", "1", "--per-state", "--states", "3", "--fit-points", "64"]
    args += ["--eval-points", "64", "--out", str(tmp_path), "--quiet"]
    args += [a for s in ["physics.hamiltonian=noninteracting", *SMALL] for a in ("--set", s)]
    assert cli.main(args) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["kind"] == "per_state" and s["samples"]["states"] == 3
    assert s["normalized_loss"] <= 1e-8 and "normalized_loss_stderr" in s
    assert np.load(tmp_path / "coefficients.npz")["c"].shape == (3, 12)
    assert "per-state floor" in capsys.readouterr().out
    assert cli.main(["floor", "--degree", "1", "--states", "3", "--out", str(tmp_path)]) == 2
