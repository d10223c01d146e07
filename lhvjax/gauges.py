"""Gauges: rules rho -> p_rho for the Bell model on S^2 x S^2 (DESIGN section 3).

Densities are given relative to the uniform probability measure on S^2 x S^2, i.e.
w = (4 pi)^2 p, so that E_p[f] = E_unif[w f] and the uniform density is w = 1.

* `svd` (eq. 34): w = 1 - |a| - |b| - sum_j S_j + 4R(a.l1) + 4R(b.l2)
  + 8 sum_j S_j R((u_j.l1)(v_j.l2)), with T = sum_j S_j u_j v_j^T and R(x) = max(x, 0);
  admissible when |a| + |b| + sum_j S_j <= 1. A mixture of products (eq. 33), sampled exactly.
* `linear`: w = 1 + 2 a.l1 + 2 b.l2 + 4 l1^T T l2; admissible while w >= 0 everywhere.
* `learned`: a base gauge plus a trainable, state-dependent combination of the moments no
  Bell statistic sees (DESIGN section 3), kept nonnegative by construction.

Per-state work (the SVD and its JVP) lives in `prepare`, per-point work in
`density_prepared`, so a batch of states x points pays for the SVD once per state.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lhvjax import harmonics
from lhvjax.quantum import Bloch, from_density
from lhvjax.sphere import normalize, project, uniform

__all__ = [
    "Gauge",
    "SVD",
    "Linear",
    "Learned",
    "GAUGES",
    "get_gauge",
    "Visibility",
    "InadmissibleStateError",
    "DegenerateStateError",
    "single_qubit_density",
]


class InadmissibleStateError(ValueError):
    """A state for which the gauge's density is not a valid (nonnegative) distribution."""


class DegenerateStateError(ValueError):
    """A state at which the svd gauge is not a function of the state (equal singular values)."""


class Visibility(NamedTuple):
    """v*: the largest visibility for which every state of S_v is admissible."""

    value: float
    method: str


def _relu(x):
    return jnp.maximum(x, 0)


def _safe_norm(x):
    # |x| with a finite derivative at x = 0 (the maximally mixed state is a valid input)
    sq = jnp.sum(x * x, axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)


def single_qubit_density(r: jax.Array, lam: jax.Array) -> jax.Array:
    """Eq. (30) relative to uniform on S^2: w = 4R(r . lambda) + 1 - |r|, valid for |r| <= 1."""
    return 4 * _relu(jnp.sum(r * lam, -1)) + 1 - _safe_norm(r)


class Gauge(abc.ABC):
    """Common interface. Subclasses define `prepare`, `density_prepared`, `margin`,
    `visibility` and `sample`; the rest follows."""

    name: str = ""
    n_spheres: int = 2

    @abc.abstractmethod
    def prepare(self, state: Bloch) -> Any:
        """Per-state quantities the density needs (a pytree); one state, no batch axes."""

    @abc.abstractmethod
    def density_prepared(self, prepared: Any, lam: jax.Array) -> jax.Array:
        """w(lam) for one point lam (2, 3) from `prepare`'s output."""

    @abc.abstractmethod
    def moments(self, prepared: Any, L: int) -> jax.Array:
        """E_p[Y_A(l1) Y_B(l2)] for all harmonics of degree <= L: (K, K), K = (L + 1)^2.

        Exact (no sampling), and differentiable in the state, so a JVP along rho' gives
        the moments' rates d/dt E_p[phi] without Monte Carlo noise (the weak form's)."""

    @abc.abstractmethod
    def margin(self, state: Bloch) -> jax.Array:
        """A number >= 0 exactly when the state is admissible (jittable, one state)."""

    @abc.abstractmethod
    def visibility(self) -> Visibility:
        """v* and how it was obtained."""

    @abc.abstractmethod
    def sample(self, key, state: Bloch, n: int) -> jax.Array:
        """n exact samples (n, 2, 3) of p_rho for one state."""

    # -- derived ---------------------------------------------------------------------------

    def density(self, state: Bloch, lam: jax.Array) -> jax.Array:
        """w = (4 pi)^2 p_rho(lam) for one state and one point (2, 3)."""
        return self.density_prepared(self.prepare(state), lam)

    def prepare_jvp(self, state: Bloch, dstate: Bloch):
        """`prepare` and its derivative along the state velocity dstate (per state)."""
        return jax.jvp(self.prepare, (state,), (dstate,))

    def terms(self, prepared, dprepared, lam):
        """(w, dw/dt, ambient grad_lam w) at one point: what the continuity residual needs."""
        (w, dw) = jax.jvp(lambda P: self.density_prepared(P, lam), (prepared,), (dprepared,))
        grad = jax.grad(lambda y: self.density_prepared(prepared, y))(lam)
        return w, dw, project(lam, grad)

    def dpdt(self, state: Bloch, dstate: Bloch, lam: jax.Array) -> jax.Array:
        """d w / dt along dstate at lam: a JVP through the state dependence of the density."""
        return jax.jvp(lambda s: self.density(s, lam), (state,), (dstate,))[1]

    def admissible(self, state: Bloch, tol: float = 1e-9) -> jax.Array:
        """Boolean per state (batched over leading axes)."""
        m = _batched(self.margin, state)
        return m >= -tol

    def check(self, state: Bloch, tol: float = 1e-9) -> None:
        """Raise `InadmissibleStateError` naming v* if any state of the batch is inadmissible."""
        m = np.atleast_1d(np.asarray(_batched(self.margin, state)))
        bad = np.flatnonzero(~(m >= -tol))
        if bad.size:
            vs = self.visibility()
            raise InadmissibleStateError(
                f"{bad.size} of {m.size} states are not admissible in the {self.name!r} gauge "
                f"(first: index {bad[0]}, margin {m[bad[0]]:.3g} < 0). Every state of S_v is "
                f"admissible for v <= v* = {vs.value:.6f}; lower the visibility or pick another "
                f"gauge."
            )

    def check_visibility(self, v: float) -> None:
        vs = self.visibility()
        if not 0 < v <= vs.value * (1 + 1e-12):
            raise InadmissibleStateError(
                f"visibility {v} is not admissible for the {self.name!r} gauge: S_v lies inside "
                f"its admissible set only for 0 < v <= v* = {vs.value:.6f} ({vs.method}). "
                f"Set the visibility to at most {vs.value:.4f}."
            )


@functools.lru_cache(maxsize=64)
def _jit_vmap(fn):
    # cached per bound method (equal for the same gauge instance), so repeated checks
    # reuse one compilation instead of tracing and compiling the margin every call
    return jax.jit(jax.vmap(fn))


def _batched(fn, state: Bloch):
    batch = state.a.shape[:-1]
    flat = jax.tree.map(lambda x: x.reshape(-1, *x.shape[len(batch) :]), state)
    out = _jit_vmap(fn)(flat)
    return out.reshape(batch)


# --- the svd gauge ---------------------------------------------------------------------------


@jax.custom_jvp
def _svd(T: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """U, S, V of a square T = U diag(S) V^T (columns u_j, v_j; S descending)."""
    U, S, Vt = jnp.linalg.svd(T)
    return U, S, jnp.swapaxes(Vt, -1, -2)


@_svd.defjvp
def _svd_jvp(primals, tangents):
    # JAX's own rule for a square matrix, except that the coefficient 1 / (S_j^2 - S_i^2)
    # of an exactly equal pair is 0 instead of inf: JAX's inf * 0 makes dp/dt NaN even for
    # a zero tangent at states with T = 0 or T = eps u u^T (the maximally mixed state and
    # the stationary states of the paper's counterexample). For distinct singular values
    # the two rules agree; at an exactly equal pair with a nonzero tangent the derivative
    # does not exist (SVD.check refuses such states) and this returns a finite value.
    (T,), (dT,) = primals, tangents
    U, S, V = _svd(T)
    dP = jnp.swapaxes(U, -1, -2) @ dT @ V
    dS = jnp.diagonal(dP, axis1=-2, axis2=-1)
    Sr, Sc = S[..., None, :], S[..., :, None]  # S_j along rows, S_i along columns
    # [i, j] = S_j^2 - S_i^2 as a product, so that the diagonal is exactly 0 however XLA
    # fuses it (Sr**2 - Sc**2 came out nonzero on the diagonal in some jitted batch sizes,
    # giving dU ~ 1e16); the diagonal is masked explicitly as well
    diff = (Sr - Sc) * (Sr + Sc)
    off = (diff != 0) & ~jnp.eye(S.shape[-1], dtype=bool)
    F = jnp.where(off, 1 / jnp.where(off, diff, 1), 0)
    dPt = jnp.swapaxes(dP, -1, -2)
    dU = U @ (F * (dP * Sr + Sc * dPt))
    dV = V @ (F * (Sc * dP + dPt * Sr))
    return (U, S, V), (dU, dS, dV)


class SVDPrepared(NamedTuple):
    c0: jax.Array  # 1 - |a| - |b| - sum S
    a: jax.Array
    b: jax.Array
    S: jax.Array  # (3,)
    U: jax.Array  # (3, 3), columns u_j
    V: jax.Array  # (3, 3), columns v_j


class SVD(Gauge):
    """The paper's gauge (eq. 34) from the SVD of T."""

    name = "svd"

    def __init__(self, degeneracy_tol: float = 1e-6):
        # relative gap below which two singular values count as equal; the SVD basis of
        # an equal pair is arbitrary, so the density is then not a function of the state
        self.degeneracy_tol = degeneracy_tol

    def prepare(self, state: Bloch) -> SVDPrepared:
        U, S, V = _svd(state.T)
        c0 = 1 - _safe_norm(state.a) - _safe_norm(state.b) - jnp.sum(S)
        return SVDPrepared(c0, state.a, state.b, S, U, V)

    def density_prepared(self, P: SVDPrepared, lam: jax.Array) -> jax.Array:
        l1, l2 = lam[0], lam[1]
        x = P.U.T @ l1  # u_j . l1
        y = P.V.T @ l2  # v_j . l2
        return P.c0 + 4 * _relu(P.a @ l1) + 4 * _relu(P.b @ l2) + 8 * jnp.sum(P.S * _relu(x * y))

    def moments(self, P: SVDPrepared, L: int) -> jax.Array:
        """The mixture of eq. (33) term by term, with E_u[R(r.x) Y_A(x)] = r_l Y_A(r) and
        R(xy) = R(x) R(y) + R(-x) R(-y) for the correlation terms."""
        r = jnp.asarray(harmonics.ramp_coefficients(L)[harmonics.degrees(L)], P.a.dtype)
        y0 = jnp.zeros(r.shape, P.a.dtype).at[0].set(1 / math.sqrt(4 * math.pi))
        sign = jnp.asarray((-1.0) ** harmonics.degrees(L), P.a.dtype)
        na, nb = _safe_norm(P.a), _safe_norm(P.b)
        # |r| Y_A(r^) with r^ any unit vector when r = 0 (the term vanishes)
        lobe = lambda v, n: n * r * harmonics.sh(v / jnp.where(n > 0, n, 1.0) + (n == 0), L)
        ya = lobe(P.a, na)
        yb = lobe(P.b, nb)
        yu = r * harmonics.sh(P.U.T, L)  # (3, K): r_l Y_A(u_j)
        yv = r * harmonics.sh(P.V.T, L)
        corr = jnp.einsum("j,ja,jb->ab", P.S, yu, yv) * (1 + sign[:, None] * sign[None, :])
        return P.c0 * jnp.outer(y0, y0) + 4 * jnp.outer(ya, y0) + 4 * jnp.outer(y0, yb) + 8 * corr

    def margin(self, state: Bloch) -> jax.Array:
        S = jnp.linalg.svd(state.T, compute_uv=False)
        return 1 - _safe_norm(state.a) - _safe_norm(state.b) - jnp.sum(S)

    def floor(self, P: SVDPrepared) -> jax.Array:
        """A lower bound of w over the spheres from `prepare`'s output: every R term is >= 0."""
        return jnp.maximum(P.c0, 0.0)

    def bound(self, state: Bloch) -> jax.Array:
        """An upper bound of w: each R term at most its coefficient."""
        P = self.prepare(state)
        return P.c0 + 4 * _safe_norm(P.a) + 4 * _safe_norm(P.b) + 8 * jnp.sum(P.S)

    def singular_gap(self, state: Bloch) -> jax.Array:
        """Smallest gap between singular values of T, relative to the largest (batched)."""
        S = jnp.linalg.svd(state.T, compute_uv=False)  # descending
        gap = jnp.min(S[..., :-1] - S[..., 1:], axis=-1)
        # T = 0 (all singular values equal) counts as degenerate: gap 0, not 0 / 0
        return gap / jnp.maximum(S[..., 0], jnp.finfo(S.dtype).tiny)

    def check(self, state: Bloch, tol: float = 1e-9) -> None:
        super().check(state, tol)
        gap = np.atleast_1d(np.asarray(self.singular_gap(state)))
        bad = np.flatnonzero(gap < self.degeneracy_tol)
        if bad.size:
            raise DegenerateStateError(
                f"{bad.size} of {gap.size} states have (nearly) equal singular values of T "
                f"(first: index {bad[0]}, relative gap {gap[bad[0]]:.2e} < "
                f"{self.degeneracy_tol:.0e}); there the svd gauge depends on the SVD's choice of "
                f"basis and dp/dt is undefined. Pure states always do this: sample a full-rank "
                f"ensemble ('hs' or 'bures') or use the 'linear' gauge."
            )

    def visibility(self) -> Visibility:
        with jax.enable_x64(True):  # a host-side optimisation: always in float64
            return _svd_visibility()

    def sample(self, key, state: Bloch, n: int) -> jax.Array:
        """Exact samples from the mixture of eq. (33).

        Components: (u_j, v_j) and (-u_j, -v_j) with weight S_j/2 each, (a^, 0) with |a|,
        (0, b^) with |b| and (0, 0) with the rest. A party in rho(r^) is drawn as
        normalize(r^ + g), g uniform on S^2 (cosine-weighted hemisphere, the density
        4R(r^.lambda)); a party in rho(0) is uniform.

        Called eagerly, an inadmissible state raises `InadmissibleStateError` (its mixture
        weights are not a distribution); under a transformation (jit, vmap) the caller
        must check admissibility first. A degenerate T is fine here: any SVD basis gives a
        valid mixture for the state.
        """
        if not isinstance(state.a, jax.core.Tracer):
            Gauge.check(self, state)
        P = self.prepare(state)
        na, nb = _safe_norm(state.a), _safe_norm(state.b)
        ah = state.a / jnp.where(na > 0, na, 1.0)
        bh = state.b / jnp.where(nb > 0, nb, 1.0)
        zero = jnp.zeros(3, state.a.dtype)
        d1 = jnp.concatenate([P.U.T, -P.U.T, ah[None], zero[None], zero[None]])
        d2 = jnp.concatenate([P.V.T, -P.V.T, zero[None], bh[None], zero[None]])
        weights = jnp.concatenate([P.S / 2, P.S / 2, na[None], nb[None], P.c0[None]])
        kc, kg = jax.random.split(key)
        comp = jax.random.categorical(kc, jnp.log(jnp.maximum(weights, 0)), shape=(n,))
        g = uniform(kg, n, 2, state.a.dtype)
        return jnp.stack([normalize(d1[comp] + g[:, 0]), normalize(d2[comp] + g[:, 1])], axis=1)


@functools.cache
def _svd_visibility() -> Visibility:
    """1 / max over states of |a| + |b| + ||T||_1 (trace norm).

    The function is convex in rho, so its maximum is at a pure state; it is invariant
    under local unitaries, so the Schmidt form cos(t)|00> + sin(t)|11> suffices. The
    one-parameter maximum is found on a grid and refined by bounded Brent search.
    """
    from scipy.optimize import minimize_scalar

    def score(t):
        psi = np.array([np.cos(t), 0, 0, np.sin(t)], dtype=np.complex128)
        s = from_density(np.outer(psi, psi.conj()))
        s = jax.tree.map(np.asarray, s)
        return (
            np.linalg.norm(s.a) + np.linalg.norm(s.b) + np.linalg.svd(s.T, compute_uv=False).sum()
        )

    grid = np.linspace(0, np.pi / 2, 91)
    t0 = grid[np.argmax([score(t) for t in grid])]
    res = minimize_scalar(
        lambda t: -score(t),
        bounds=(max(t0 - 0.02, 0), min(t0 + 0.02, np.pi / 2)),
        method="bounded",
        options={"xatol": 1e-12},
    )
    best = -res.fun
    return Visibility(
        float(1 / best),
        f"1 / max(|a| + |b| + ||T||_1) = 1 / {best:.9f}, maximised over Schmidt-form pure "
        f"states (convexity and local-unitary invariance), at Schmidt angle {res.x:.6f}",
    )


# --- the linear gauge ------------------------------------------------------------------------


def _fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    s = np.sqrt(1 - z**2)
    return np.stack([s * np.cos(phi), s * np.sin(phi), z], -1)


class Linear(Gauge):
    """w = 1 + 2 a.l1 + 2 b.l2 + 4 l1^T T l2: the lowest moments only, linear in rho."""

    name = "linear"

    def __init__(self, margin_grid: int = 1024, margin_steps: int = 10, margin_starts: int = 4):
        self.margin_grid = margin_grid
        self.margin_steps = margin_steps
        self.margin_starts = margin_starts

    def prepare(self, state: Bloch) -> Bloch:
        return state

    def density_prepared(self, s: Bloch, lam: jax.Array) -> jax.Array:
        return _linear_density(s, lam)

    def moments(self, s: Bloch, L: int) -> jax.Array:
        return harmonics.linear_moment_matrix(s, L)

    def floor(self, s: Bloch) -> jax.Array:
        """A smooth lower bound of w over the spheres: 1 - 2|a| - 2|b| - 4 ||T||_op, or 0."""
        top = _svd(s.T)[1][0]
        return jnp.maximum(1 - 2 * _safe_norm(s.a) - 2 * _safe_norm(s.b) - 4 * top, 0.0)

    def bound(self, state: Bloch) -> jax.Array:
        """An upper bound of w: 1 + 2|a| + 2|b| + 4 ||T||_op."""
        top = jnp.linalg.norm(state.T, ord=2)
        return 1 + 2 * _safe_norm(state.a) + 2 * _safe_norm(state.b) + 4 * top

    def margin(self, state: Bloch) -> jax.Array:
        """min over S^2 x S^2 of w.

        For fixed l1 the minimum over l2 is 1 + 2 a.l1 - |2b + 4 T^T l1|, leaving a
        minimisation over l1 in S^2: a Fibonacci grid, then safeguarded Newton steps on
        the sphere from the `margin_starts` best grid points (each step takes the best of
        a Newton step, its halvings and a gradient step, so g never increases).
        """
        dtype = state.a.dtype
        a, c, D = state.a, 2 * state.b, 4 * state.T.T  # g(l1) = 1 + 2 a.l1 - |c + D l1|

        def g(l1):
            return 1 + 2 * a @ l1 - _safe_norm(c + D @ l1)

        grid = jnp.asarray(_fibonacci_sphere(self.margin_grid), dtype)
        vals = jax.vmap(g)(grid)
        _, idx = jax.lax.top_k(-vals, min(self.margin_starts, self.margin_grid))
        spacing = 1.0 / self.margin_grid**0.5  # about the grid's angular spacing
        e_x = jnp.asarray([1.0, 0.0, 0.0], dtype)
        e_y = jnp.asarray([0.0, 1.0, 0.0], dtype)
        eye3 = jnp.eye(3, dtype=dtype)

        def step(i, x):
            # Riemannian gradient and Hessian of g at x in a tangent basis E (analytic:
            # cheap to compile); the chart u -> normalize(x + E u) adds -(x . grad) 1
            r = c + D @ x
            nr = jnp.maximum(jnp.linalg.norm(r), jnp.finfo(dtype).tiny)
            rh = r / nr
            grad = 2 * a - D.T @ rh
            hess = -(D.T @ (eye3 - jnp.outer(rh, rh)) @ D) / nr
            e1 = normalize(project(x, jnp.where(jnp.abs(x[0]) < 0.9, e_x, e_y)))
            E = jnp.stack([e1, jnp.cross(x, e1)], -1)  # (3, 2)
            gr = E.T @ grad
            Hs = E.T @ hess @ E - (x @ grad) * jnp.eye(2, dtype=dtype)
            det = Hs[0, 0] * Hs[1, 1] - Hs[0, 1] * Hs[1, 0]
            pd = (Hs[0, 0] > 0) & (det > 0)
            inv = jnp.stack([jnp.stack([Hs[1, 1], -Hs[0, 1]]), jnp.stack([-Hs[1, 0], Hs[0, 0]])])
            un = jnp.where(pd, -(inv @ gr) / jnp.where(pd, det, 1.0), -gr)
            un = un * jnp.minimum(1.0, 0.5 / (jnp.linalg.norm(un) + 1e-30))
            ug = -spacing * gr / (1 + jnp.linalg.norm(gr))
            us = jnp.stack([0 * un, un, un / 2, un / 4, un / 16, ug])
            cands = normalize(x + us @ E.T)
            return cands[jnp.argmin(jax.vmap(g)(cands))]

        refined = jax.vmap(lambda x: jax.lax.fori_loop(0, self.margin_steps, step, x))(grid[idx])
        return jnp.minimum(jnp.min(vals), jnp.min(jax.vmap(g)(refined)))

    def visibility(self) -> Visibility:
        with jax.enable_x64(True):
            return _linear_visibility()

    def sample(self, key, state: Bloch, n: int) -> jax.Array:
        """Exact samples by rejection from uniform proposals with the bound
        w <= 1 + 2|a| + 2|b| + 4 ||T||_op. Host-side loop (variable number of draws)."""
        self.check(state)
        return _rejection_sample(self, key, state, n)


def _rejection_sample(gauge: Gauge, key, state: Bloch, n: int) -> jax.Array:
    """n exact samples by rejection from uniform proposals under w <= gauge.bound(state).
    Host-side loop (the number of draws varies)."""
    bound = float(gauge.bound(state))
    prepared = gauge.prepare(state)
    out, have = [], 0
    while have < n:
        key, sub = jax.random.split(key)
        # proposal counts are powers of two, so a few compilations serve every call
        m = max(256, 1 << math.ceil(math.log2(1.2 * (n - have) * bound)))
        lam, keep = _proposals(gauge, sub, prepared, bound, m, state.a.dtype)
        acc = np.asarray(lam)[np.asarray(keep)]
        out.append(acc)
        have += len(acc)
    return jnp.asarray(np.concatenate(out)[:n])


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _proposals(gauge: Gauge, key, prepared, bound, m: int, dtype):
    """m uniform proposals and whether each is accepted (u * bound < w)."""
    kp, ka = jax.random.split(key)
    lam = uniform(kp, m, 2, dtype)
    w = jax.vmap(gauge.density_prepared, in_axes=(None, 0))(prepared, lam)
    return lam, jax.random.uniform(ka, (m,), dtype) * bound < w


def _linear_density(s: Bloch, lam: jax.Array) -> jax.Array:
    l1, l2 = lam[0], lam[1]
    return 1 + 2 * s.a @ l1 + 2 * s.b @ l2 + 4 * l1 @ s.T @ l2


@functools.cache
def _linear_visibility() -> Visibility:
    """1 / max over rho, l1, l2 of -(2 a.l1 + 2 b.l2 + 4 l1^T T l2).

    For fixed (l1, l2) this is tr(rho O) with O = -(2 l1.s x 1 + 2 1 x l2.s
    + 4 l1.s x l2.s), maximised over rho by O's top eigenvalue; by rotation invariance
    l1 = z and l2 at angle gamma from z, scanned on a grid and refined by Brent search.
    """
    from scipy.optimize import minimize_scalar

    from lhvjax.quantum import PAULI

    def top(gamma):
        n2 = np.array([np.sin(gamma), 0, np.cos(gamma)])
        s1 = PAULI[2]
        s2 = np.einsum("j,jxy->xy", n2, PAULI)
        O = -(2 * np.kron(s1, np.eye(2)) + 2 * np.kron(np.eye(2), s2) + 4 * np.kron(s1, s2))
        return np.linalg.eigvalsh(O)[-1]

    grid = np.linspace(0, np.pi, 181)
    g0 = grid[np.argmax([top(g) for g in grid])]
    res = minimize_scalar(
        lambda g: -top(g),
        bounds=(max(g0 - 0.02, 0), min(g0 + 0.02, np.pi)),
        method="bounded",
        options={"xatol": 1e-12},
    )
    best = max(-res.fun, top(g0))
    return Visibility(
        float(1 / best),
        f"1 / max_(l1, l2) lambda_max(O) = 1 / {best:.9f}: the worst point's operator "
        f"O = -(2 l1.s x 1 + 2 1 x l2.s + 4 l1.s x l2.s), scanned over the angle between "
        f"l1 and l2",
    )


# --- the learned gauge -----------------------------------------------------------------------


class _Coefficients(nn.Module):
    """State features -> coefficients of the free moments; zero output at initialisation."""

    width: int
    depth: int
    out: int

    @nn.compact
    def __call__(self, f):
        h = f
        for _ in range(self.depth):
            # random biases: with zero ones a tanh net is odd in the features
            h = jnp.tanh(nn.Dense(self.width, bias_init=nn.initializers.normal(1.0))(h))
        return nn.Dense(self.out, kernel_init=nn.initializers.zeros)(h)


class LearnedPrepared(NamedTuple):
    base: Any  # the base gauge's `prepare` output
    coeffs: jax.Array  # (M,) over harmonics.pairs(degree, "free")
    room: jax.Array  # a lower bound of the base density over the spheres (>= 0)


class Learned(Gauge):
    """w = w_base + room(rho) g / (1 + |c|_M),  g = sum_(A,B) free c_AB(rho) Y_A(l1) Y_B(l2).

    The pairs (A, B) have an even degree >= 2 on at least one sphere (`harmonics.pairs(
    degree, "free")`), so g is orthogonal to every moment the Bell statistics see: each
    statistic of the learned gauge equals the base gauge's. The coefficients c(rho) come
    from a small network of the Bloch coordinates (divided by `feature_scale`, the
    visibility, to make them O(1)); it starts at zero, i.e. at the base gauge.

    Guard: with C the matrix of coefficients (zero on visible pairs) and Y(l) the vector of
    harmonics, |g| = |Y(l1)^T C Y(l2)| <= ||C||_F |Y(l1)| |Y(l2)| = ||C||_F (L + 1)^2 / 4 pi
    =: |c| (the addition theorem makes |Y(l)|^2 = sum_l (2l + 1) / 4 pi at every point), so
    the correction is smaller than room(rho) <= min w_base (the base gauge's `floor`) and w
    stays positive wherever the base density is. For the svd base room = 1 - |a| - |b| -
    sum S; for the linear base the cruder 1 - 2|a| - 2|b| - 4 ||T||_op (0 where negative:
    such states keep the base gauge).

    The network's parameters are not part of the gauge: `init` makes them and `bind`
    returns the gauge that uses them (the residual binds the "gauge" part of a run's
    parameters).
    """

    name = "learned"

    def __init__(
        self,
        base: str | Gauge = "svd",
        degree: int = 2,
        width: int = 32,
        depth: int = 2,
        feature_scale: float = 1.0,
        params: Any = None,
    ):
        self.base = get_gauge(base)
        if isinstance(self.base, Learned):
            raise ValueError("the base of a learned gauge must be a fixed gauge (svd or linear)")
        if degree < 2:
            raise ValueError(f"a learned gauge needs degree >= 2 (free moments); got {degree}")
        self.degree, self.width, self.depth = degree, width, depth
        self.feature_scale = feature_scale
        self.params = params
        self.net = _Coefficients(width, depth, harmonics.pairs(degree, "free")[0].size)

    def init(self, key, dtype=jnp.float32) -> Any:
        params = self.net.init(key, jnp.zeros((15,), dtype))
        return jax.tree.map(lambda x: x.astype(dtype), params)

    def bind(self, params) -> Learned:
        return Learned(
            self.base, self.degree, self.width, self.depth, self.feature_scale, params=params
        )

    def prepare(self, state: Bloch) -> LearnedPrepared:
        if self.params is None:
            raise ValueError("this learned gauge has no parameters: use gauge.bind(params)")
        base = self.base.prepare(state)
        coeffs = self.net.apply(self.params, state.flat() / self.feature_scale)
        return LearnedPrepared(base, coeffs, self.base.floor(base))

    def correction(self, P: LearnedPrepared, lam: jax.Array) -> jax.Array:
        """w - w_base at one point (2, 3)."""
        A, B = harmonics.pairs(self.degree, "free")
        Y1 = harmonics.sh(normalize(lam[0]), self.degree)
        Y2 = harmonics.sh(normalize(lam[1]), self.degree)
        size = jnp.sqrt(jnp.sum(P.coeffs**2) + 1e-24) * (self.degree + 1) ** 2 / (4 * math.pi)
        return P.room * jnp.sum(P.coeffs * Y1[A] * Y2[B]) / (1 + size)

    def density_prepared(self, P: LearnedPrepared, lam: jax.Array) -> jax.Array:
        return self.base.density_prepared(P.base, lam) + self.correction(P, lam)

    def moments(self, P: LearnedPrepared, L: int) -> jax.Array:
        """The base's plus the correction's own coefficients: E_u[Y_A Y_B Y_A' Y_B'] =
        delta_AA' delta_BB' / (4 pi)^2 (harmonics of degree > L are dropped)."""
        A, B = harmonics.pairs(self.degree, "free")
        K = (L + 1) ** 2
        keep = (A < K) & (B < K)
        size = jnp.sqrt(jnp.sum(P.coeffs**2) + 1e-24) * (self.degree + 1) ** 2 / (4 * math.pi)
        scale = P.room / (1 + size) / (4 * math.pi) ** 2
        extra = jnp.zeros((K, K), P.coeffs.dtype).at[A[keep], B[keep]].set(P.coeffs[keep])
        return self.base.moments(P.base, L) + scale * extra

    def margin(self, state: Bloch) -> jax.Array:
        return self.base.margin(state)

    def check(self, state: Bloch, tol: float = 1e-9) -> None:
        self.base.check(state, tol)

    def visibility(self) -> Visibility:
        return self.base.visibility()

    def bound(self, state: Bloch) -> jax.Array:
        return self.base.bound(state) + self.prepare(state).room

    def sample(self, key, state: Bloch, n: int) -> jax.Array:
        """Exact samples by rejection under w <= base bound + room (host-side loop)."""
        self.check(state)
        return _rejection_sample(self, key, state, n)


GAUGES = {"svd": SVD, "linear": Linear, "learned": Learned}


def get_gauge(name: str | Gauge) -> Gauge:
    """A gauge by name ('svd', 'linear' or 'learned' over svd), or the instance itself."""
    if isinstance(name, Gauge):
        return name
    try:
        return GAUGES[name]()
    except KeyError:
        raise ValueError(f"unknown gauge {name!r}; choose one of {', '.join(GAUGES)}") from None
