"""Gauges rho -> p_rho (lhvjax.gauges): normalisation, moments, admissibility, v*, the
state derivative dp/dt and the per-point terms, float64 unless stated.

Monte Carlo checks compare with the exact value at 4 standard errors (fixed seeds).
`systems.batched(name)` holds jitted states x points versions of the gauge functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems
from scipy.optimize import minimize

from lhvjax import quantum as q
from lhvjax import sphere
from lhvjax.bell import mean_with_stderr
from lhvjax.gauges import (
    GAUGES,
    SVD,
    DegenerateStateError,
    InadmissibleStateError,
    Linear,
    get_gauge,
)
from lhvjax.quantum import Bloch

NAMES = ["svd", "linear"]
PAULI_A = np.stack([np.kron(p, np.eye(2)) for p in q.PAULI])  # sigma_j x 1, in numpy
PAULI_B = np.stack([np.kron(np.eye(2), p) for p in q.PAULI])
PAULI_T = np.stack([[np.kron(p, r) for r in q.PAULI] for p in q.PAULI])
M = 2**16  # Monte Carlo points per state
P = 512  # points per state for pointwise checks


def svd_kink_args(s, lam):
    """The arguments of R(.) in eq. (34); the svd density is smooth where none is 0."""
    Pr = SVD().prepare(s)
    x, y = Pr.U.T @ lam[0], Pr.V.T @ lam[1]
    return jnp.concatenate([jnp.stack([s.a @ lam[0], s.b @ lam[1]]), x * y])


_kinks = jax.jit(jax.vmap(jax.vmap(svd_kink_args, in_axes=(None, 0)), in_axes=(0, None)))


def same_side(name, pairs):
    """(S, P) booleans: True where no kink of the svd density separates the (states, points)
    pairs, so that a finite difference between them sees one smooth piece (linear: all)."""
    if name != "svd":
        return np.ones((pairs[0][0].a.shape[0], pairs[0][1].shape[0]), bool)
    signs = np.stack([np.sign(np.asarray(_kinks(s, lam))) for s, lam in pairs])
    return np.all(signs == signs[0], axis=(0, 3)) & np.all(signs[0] != 0, axis=2)


# --- lookup -----------------------------------------------------------------------------------


def test_get_gauge():
    assert isinstance(get_gauge("svd"), SVD) and isinstance(get_gauge("linear"), Linear)
    G = SVD(degeneracy_tol=1e-3)
    assert get_gauge(G) is G
    assert set(GAUGES) == {"svd", "linear", "learned"}
    with pytest.raises(ValueError, match=r"unknown gauge 'bogus'; choose one of svd, linear"):
        get_gauge("bogus")


# --- the density is a probability density reproducing the first moments ---------------------


@pytest.mark.parametrize("name", NAMES)
def test_density_normalised_and_nonnegative(name):
    G, f = systems.gauge(name), systems.batched(name)
    v = G.visibility().value
    S = systems.stack(systems.states(1, 6, v), systems.states(2, 2, v, "pure"))
    w = f.density(S, sphere.uniform(jax.random.key(3), M))
    est = mean_with_stderr(w, axis=1)
    assert np.all(systems.within(est, 1.0)), est
    assert np.max(est.stderr) < 0.01
    assert np.all(G.admissible(S))
    assert np.min(w) >= -1e-12
    # the margin is a lower bound of the density (linear: it is the minimum itself)
    assert np.all(np.min(w, axis=1) >= f.margin(S) - 1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_first_moments_from_density_and_sampler(name):
    """E[l1] = 2a/3, E[l2] = 2b/3, E[l1 l2^T] = 4T/9, by weighted uniform points and by
    the exact sampler."""
    G, f = systems.gauge(name), systems.batched(name)
    S = systems.states(4, 3, 0.95 * G.visibility().value)
    lam_u = sphere.uniform(jax.random.key(5), M)
    W = f.density(S, lam_u)
    for i in range(3):
        s = systems.one(S, i)
        exact = [2 * s.a / 3, 2 * s.b / 3, 4 * s.T / 9]
        lam_s = G.sample(jax.random.key(6 + i), s, M)
        for lam, w in ((lam_u, W[i]), (lam_s, None)):
            moments = [lam[:, 0], lam[:, 1], lam[:, 0, :, None] * lam[:, 1, None, :]]
            for fk, ek in zip(moments, exact, strict=True):
                wk = None if w is None else w.reshape((-1,) + (1,) * (fk.ndim - 1))
                est = mean_with_stderr(fk, wk)
                assert np.all(systems.within(est, ek)), (est, ek)


def test_svd_sampler_jits():
    G = systems.gauge("svd")
    s = systems.one(systems.states(7, 1, 0.2), 0)
    eager = G.sample(jax.random.key(0), s, M)
    jitted = jax.jit(lambda k, st: G.sample(k, st, M))(jax.random.key(0), s)
    np.testing.assert_allclose(jitted, eager, atol=1e-14)


# --- admissibility and v* ----------------------------------------------------------------------


def _svd_score(s):
    """|a| + |b| + ||T||_1, batched, in numpy."""
    a, b, T = (np.asarray(x) for x in s)
    S = np.linalg.svd(T, compute_uv=False)
    return np.linalg.norm(a, axis=-1) + np.linalg.norm(b, axis=-1) + S.sum(-1)


def test_svd_visibility():
    vs = systems.gauge("svd").visibility()
    assert vs.value == pytest.approx(systems.SVD_VSTAR, abs=1e-9)
    assert "1 / max" in vs.method
    # no random state reaches the bound at v*; the margin is 1 - score
    worst = 0.0
    for seed, ens in enumerate(["hs", "bures", "pure"]):
        S = systems.states(100 + seed, 10000, vs.value, ens)
        score = _svd_score(S)
        np.testing.assert_allclose(systems.batched("svd").margin(S), 1 - score, atol=1e-12)
        worst = max(worst, score.max())
    assert worst <= 1 + 1e-12
    # a local optimiser over general pure states finds nothing above 1 + 2 sqrt(2), and
    # reaches it (so v* is tight, not just safe)
    rng = np.random.default_rng(0)

    def neg_score(x):
        psi = x[:4] + 1j * x[4:]
        psi = psi / np.linalg.norm(psi)
        rho = np.outer(psi, psi.conj())
        a = np.einsum("jyx,xy->j", PAULI_A, rho).real
        b = np.einsum("jyx,xy->j", PAULI_B, rho).real
        T = np.einsum("jkyx,xy->jk", PAULI_T, rho).real
        return -_svd_score((a, b, T))

    opts = dict(maxiter=4000, xatol=1e-10, fatol=1e-12)
    best = max(
        -minimize(neg_score, rng.normal(size=8), method="Nelder-Mead", options=opts).fun
        for _ in range(6)
    )
    assert best <= 1 + 2 * systems.SQRT2 + 1e-9
    assert best >= 1 + 2 * systems.SQRT2 - 1e-5
    # the maximiser, cos(pi/8)|00> + sin(pi/8)|11>, sits exactly on the boundary at v*
    psi = np.array([np.cos(np.pi / 8), 0, 0, np.sin(np.pi / 8)])
    s = q.from_density(np.outer(psi, psi))
    m = systems.batched("svd").margin(systems.stack(s.scale(vs.value), s.scale(1.001 * vs.value)))
    assert abs(float(m[0])) < 1e-12 and m[1] < 0


def _fibonacci(n):
    i = np.arange(n) + 0.5
    z, phi = 1 - 2 * i / n, np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def _linear_min_reference(s):
    """min over S^2 x S^2 of the linear density, independently of Linear.margin: the inner
    minimum over l2 is elementary (min_l2 c + d.l2 = c - |d|); the outer one is a 200000
    point grid polished by Nelder-Mead in angles from its 3 best points."""
    a, b, T = (np.asarray(x) for x in s)
    g = lambda l1: 1 + 2 * l1 @ a - np.linalg.norm(2 * b + 4 * l1 @ T, axis=-1)
    grid = _fibonacci(200000)
    best = grid[np.argsort(g(grid))[:3]]

    def unit(x):
        return np.array([np.sin(x[0]) * np.cos(x[1]), np.sin(x[0]) * np.sin(x[1]), np.cos(x[0])])

    opts = dict(xatol=1e-12, fatol=1e-15)
    starts = [[np.arccos(l[2]), np.arctan2(l[1], l[0])] for l in best]
    return min(
        minimize(lambda x: g(unit(x)), x0, method="Nelder-Mead", options=opts).fun for x0 in starts
    )


def test_linear_visibility_and_margin():
    vs = systems.gauge("linear").visibility()
    margin = systems.batched("linear").margin
    assert vs.value == pytest.approx(systems.LINEAR_VSTAR, abs=1e-9)
    # the margin is the exact minimum of the density (an overestimate would let slightly
    # negative densities pass as admissible); pure states at v* come within 1e-4 of 0.
    # Also: random states at v* are admissible; |01> = rho(z) x rho(-z) is a worst state,
    # margin 1 - 4v (zero at v*). One batch, one compilation.
    vs01 = np.array([0.1, 0.25, 0.3])
    s01 = systems.product([0, 0, 1], [0, 0, -1])
    S = systems.stack(
        systems.states(110, 5, vs.value, "pure"),
        systems.states(111, 5, vs.value),
        *(s01.scale(v) for v in vs01),
        systems.states(120, 2000, vs.value),
        systems.states(121, 2000, vs.value, "pure"),
    )
    m = np.asarray(margin(S))
    ref = np.array([_linear_min_reference(systems.one(S, i)) for i in range(10)])
    np.testing.assert_allclose(m[:10], ref, atol=1e-9)
    np.testing.assert_allclose(m[10:13], 1 - 4 * vs01, atol=1e-12)
    assert m[13:].min() >= -1e-9


@pytest.mark.parametrize("name", NAMES)
def test_check_visibility(name):
    G = systems.gauge(name)
    vstar = G.visibility().value
    G.check_visibility(vstar)
    G.check_visibility(0.5 * vstar)
    for v in (1.001 * vstar, 1.0):
        with pytest.raises(InadmissibleStateError, match=f"v\\* = {vstar:.6f}"):
            G.check_visibility(v)


@pytest.mark.parametrize("name", NAMES)
def test_check_refuses_inadmissible_states(name):
    G = systems.gauge(name)
    vstar = G.visibility().value
    if name == "svd":  # margins 1 - 3 * 0.3 and 1 - (0.5 + 0.5 + 0.25)
        good, bad, margins = (
            systems.werner(0.3),
            systems.product([0, 0, 0.5], [0, 0, 0.5]),
            (0.1, -0.25),
        )
    else:  # margins 1 - 4p (at l1 = l2)
        good, bad, margins = systems.werner(0.2), systems.werner(0.3), (0.2, -0.2)
    batch = systems.stack(good, bad, good)
    np.testing.assert_allclose(
        systems.batched(name).margin(batch), np.array(margins)[[0, 1, 0]], atol=1e-12
    )
    np.testing.assert_array_equal(G.admissible(batch), [True, False, True])
    with pytest.raises(InadmissibleStateError, match=f"1 of 3 states.*index 1.*v\\* = {vstar:.6f}"):
        G.check(batch)
    with pytest.raises(InadmissibleStateError, match=f"v\\* = {vstar:.6f}"):
        G.sample(jax.random.key(0), bad, 10)


# --- dp/dt and the per-point terms ------------------------------------------------------------

H_FD = 1e-5  # central-difference step: truncation ~ H_FD^2 ~ 1e-10, rounding ~ 1e-16 / H_FD


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ham", ["heisenberg", "noninteracting"])
def test_dpdt_is_the_derivative_along_the_trajectory(name, ham):
    """dpdt (a JVP through the SVD for svd) against (w(rho(h)) - w(rho(-h))) / 2h with the
    exact evolution. The svd density is piecewise smooth in (state, point): points where an
    argument of R(.) changes sign between -h and h see a kink and are skipped (about h of
    them; at least 99% must remain). Seen: max error 2e-9."""
    f = systems.batched(name)
    H = systems.HAMILTONIANS[ham]()
    S = systems.states(200, 6, systems.gauge(name).visibility().value)
    lam = sphere.uniform(jax.random.key(201), P)
    d = np.asarray(f.dpdt(S, q.bloch_derivative(H, S), lam))
    Sp, Sm = q.evolve(H, S, H_FD), q.evolve(H, S, -H_FD)
    fd = np.asarray((f.density(Sp, lam) - f.density(Sm, lam)) / (2 * H_FD))
    assert np.max(np.abs(d)) > 0.1  # the states do evolve
    ok = same_side(name, [(Sp, lam), (Sm, lam)])
    assert ok.mean() >= 0.99
    np.testing.assert_allclose(d[ok], fd[ok], atol=1e-7)


def test_linear_dpdt_is_linear():
    """The linear gauge is linear in the state: dw along ds is w(ds) - 1, exactly."""
    f = systems.batched("linear")
    S = systems.states(210, 4, 0.2)
    dS = q.bloch_derivative(systems.heisenberg(), S)
    lam = sphere.uniform(jax.random.key(211), P)
    np.testing.assert_allclose(f.dpdt(S, dS, lam), f.density(dS, lam) - 1, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_terms(name):
    """terms(prepare_jvp(...)) gives w, dw/dt and the tangent gradient of w; the gradient
    matches a central difference along great circles on each sphere (svd: off kinks)."""
    f = systems.batched(name)
    S = systems.states(220, 4, systems.gauge(name).visibility().value)
    dS = q.bloch_derivative(systems.heisenberg(), S)
    lam = sphere.uniform(jax.random.key(221), P)
    tau = sphere.normalize(sphere.project(lam, jax.random.normal(jax.random.key(222), lam.shape)))
    w, dw, grad = f.terms(S, dS, lam)
    np.testing.assert_allclose(w, f.density(S, lam), atol=1e-14)
    np.testing.assert_allclose(dw, f.dpdt(S, dS, lam), atol=1e-13)
    np.testing.assert_allclose(jnp.sum(grad * lam, -1), 0, atol=1e-13)
    assert np.max(np.abs(grad)) > 0.1
    h = 1e-6
    for k in range(2):  # move one sphere at a time
        mask = jnp.zeros((2, 1)).at[k].set(1.0)
        plus = systems.great_circle(lam, tau, h * mask)
        minus = systems.great_circle(lam, tau, -h * mask)
        fd = np.asarray((f.density(S, plus) - f.density(S, minus)) / (2 * h))
        ok = same_side(name, [(S, plus), (S, minus)])
        assert ok.mean() > 0.98
        exact = np.asarray(jnp.sum(grad[:, :, k] * tau[None, :, k], -1))
        np.testing.assert_allclose(fd[ok], exact[ok], atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_rotation_field_carries_both_gauges(name):
    """Theorem 1's setting: under the noninteracting H both gauges are carried by the exact
    rotation field (div V = 0), so dw/dt + V . grad w = 0 pointwise, kinks included. Under
    the Heisenberg H the same field does not carry them (the check has teeth)."""
    f = systems.batched(name)
    S = systems.states(230, 4, systems.gauge(name).visibility().value)
    lam = sphere.uniform(jax.random.key(231), P)
    v = jax.vmap(systems.rotation_field())(lam)
    for ham, zero in (("noninteracting", True), ("heisenberg", False)):
        dS = q.bloch_derivative(systems.HAMILTONIANS[ham](), S)
        w, dw, grad = f.terms(S, dS, lam)
        r = dw + jnp.sum(v * grad, axis=(-1, -2))
        if zero:
            np.testing.assert_allclose(r, 0, atol=1e-12)
        else:
            assert np.sqrt(np.mean(r**2)) > 0.05


# --- the svd gauge's degenerate singular values -----------------------------------------------


def test_singular_gap():
    G = systems.gauge("svd")
    T = jnp.diag(jnp.array([3.0, -2.0, 1.999]))  # singular values 3, 2, 1.999
    R = systems.rotation_matrix(systems.N1, 0.7)
    s = Bloch(jnp.zeros(3), jnp.zeros(3), R @ T)
    assert float(G.singular_gap(s)) == pytest.approx(0.001 / 3, rel=1e-9)
    assert float(G.singular_gap(systems.maximally_mixed())) == 0.0


def test_default_ensemble_is_never_degenerate():
    """Full-rank ensembles give distinct singular values (they repel); at 20000 hs states the
    smallest relative gap observed (seed 300) is 2.0e-3, far above degeneracy_tol = 1e-6."""
    G = systems.gauge("svd")
    S = systems.states(300, 20000, G.visibility().value)
    gap = np.asarray(G.singular_gap(S))
    assert gap.min() > 1e3 * G.degeneracy_tol, gap.min()
    G.check(S)  # neither inadmissible nor degenerate


def test_degenerate_states_are_refused():
    G = systems.gauge("svd")
    v = G.visibility().value
    pure = systems.states(301, 1000, v, "pure")
    assert np.asarray(G.singular_gap(pure)).max() < 1e-12  # always a degenerate pair
    for s in (pure, systems.werner(0.2), systems.maximally_mixed()):
        with pytest.raises(DegenerateStateError, match=r"equal singular values.*'hs' or 'bures'"):
            G.check(s)


def test_dpdt_is_finite_at_stationary_degenerate_states():
    """The maximally mixed state and the counterexample's states (a = b, T = eps u u^T) are
    stationary under Heisenberg: dp/dt = 0 there, not NaN (from 0 * 1 / (S_i^2 - S_j^2))."""
    u = systems.N1
    S = systems.stack(
        systems.maximally_mixed(),
        Bloch(jnp.zeros(3), jnp.zeros(3), 0.1 * jnp.outer(u, u)),
        Bloch(0.1 * u, 0.1 * u, -0.2 * jnp.outer(u, u)),
    )
    dS = q.bloch_derivative(systems.heisenberg(), S)
    np.testing.assert_allclose(dS.flat(), 0, atol=1e-15)
    d = systems.batched("svd").dpdt(S, dS, sphere.uniform(jax.random.key(310), P))
    np.testing.assert_array_equal(d, 0.0)


# --- float32 ----------------------------------------------------------------------------------


def test_svd_float32_agrees_with_float64(f32):
    """The density agrees to ~1e-6 relative. dp/dt goes through the SVD's derivative, whose
    coefficients 1 / (S_i^2 - S_j^2) amplify float32 rounding: over these 32 states the
    relative error was at most 6 eps32 / gap (gap = relative singular gap, eps32 = 1.2e-7;
    1.5e-5 at gap 0.047) with median 4e-7. Bound: 1e-6 + 16 eps32 / gap per state, median
    below 1e-6."""
    G = SVD()
    f = lambda s, ds, l: (G.density(s, l), G.dpdt(s, ds, l))
    grid = jax.vmap(jax.vmap(f, in_axes=(None, None, 0)), in_axes=(0, 0, None))
    with jax.enable_x64(True):
        S = systems.states(320, 32, G.visibility().value)
        dS = q.bloch_derivative(systems.heisenberg(), S)
        lam = sphere.uniform(jax.random.key(321), 256)
        w64, d64 = (np.asarray(x) for x in jax.jit(grid)(S, dS, lam))
        gap = np.asarray(G.singular_gap(S))
    to32 = lambda t: jax.tree.map(lambda x: jnp.asarray(np.asarray(x), jnp.float32), t)
    w32, d32 = jax.jit(grid)(to32(S), to32(dS), to32(lam))
    assert w32.dtype == jnp.float32 and d32.dtype == jnp.float32
    w_rel = np.max(np.abs(np.asarray(w32, np.float64) - w64)) / np.max(np.abs(w64))
    assert w_rel < 5e-6
    scale = np.max(np.abs(d64), axis=1)
    d_rel = np.max(np.abs(np.asarray(d32, np.float64) - d64), axis=1) / scale
    eps32 = float(np.finfo(np.float32).eps)
    assert np.all(d_rel < 1e-6 + 16 * eps32 / gap), (d_rel, gap)
    assert np.median(d_rel) < 1e-6


@pytest.mark.parametrize("n", [1, 3, 7])
def test_svd_jvp_is_batch_size_independent_under_jit(n):
    # regression: S_j^2 - S_i^2 fused by XLA was not exactly 0 on the diagonal for some
    # batch sizes, and the frame derivative came out ~1e16
    from lhvjax import quantum

    st = quantum.random_states(jax.random.key(21), 8, 0.2)
    vel = quantum.bloch_derivative(quantum.heisenberg(1.0), st)
    g = SVD()
    ref = jax.vmap(g.prepare_jvp)(st, vel)[1].U
    sub = jax.tree.map(lambda x: x[:n], (st, vel))
    out = jax.jit(jax.vmap(g.prepare_jvp))(*sub)[1].U
    np.testing.assert_allclose(out, ref[:n], atol=1e-12)
