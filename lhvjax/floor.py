"""The certified floor: the global least-squares minimum of L(V) over a finite basis.

The strong-form residual r = dw/dt + w div V + V . grad w is linear in V (DESIGN
section 4), so over V = sum_i c_i t_i the loss is a convex quadratic in c,

    r = dw + A c,        A_i = w div t_i + t_i . grad w        (per state and point),

and its minimum is a least-squares problem with a global solution. The normalised value
L(V*) / L(0) on held-out states and points is the floor that a neural field of the same
kind has to beat: a network stuck above it has an optimisation problem, one that gets
below it is using functions outside the basis.

Basis (`HarmonicBasis`, state-independent, degree K)
    Scalars: products phi_ab = Y_a(l1) Y_b(l2) of real spherical harmonics (e3nn-jax,
    "integral" normalisation: orthonormal on S^2), Y_a of degree deg(a), with
    deg(a) + deg(b) <= K. Fields: for each sphere k and each scalar with a nonconstant
    factor on sphere k, the surface gradient grad_k phi and the rotated gradient
    l_k x grad_k phi, as a field on sphere k only (the other component is zero):

        sphere 1:  (grad Y_a)(l1) Y_b(l2),   l1 x (grad Y_a)(l1) Y_b(l2),   deg(a) >= 1,
        sphere 2:  Y_a(l1) (grad Y_b)(l2),   Y_a(l1) l2 x (grad Y_b)(l2),   deg(b) >= 1.

    On each sphere the gradients and rotated gradients of Y_lm, l >= 1, are the vector
    spherical harmonics: together they are an orthogonal basis of the tangent fields
    (Hodge), so the basis is linearly independent and spans, as K grows, every tangent
    field on S^2 x S^2. Divergences are analytic: div grad Y_l = -l (l + 1) Y_l (the
    Laplace-Beltrami eigenvalue) and div (l x grad phi) = 0. Size per sphere
    2 sum_{l=1}^K (2l + 1) (K - l + 1)^2, in all (`basis_size`): K = 1: 12, 2: 68, 3: 216,
    4: 520, 5: 1060. K = 1 holds the rigid rotations l_k -> e_j x l_k (l1 x grad Y_1
    spans them), so the exact field of a noninteracting Hamiltonian is in the span.

Invariant basis (`InvariantBasis`, degree K): the rotation-equivariant part of the
harmonic one, P_j(l1 . l2) times P_1 l2, l1 x l2 (sphere 1) and P_2 l1, l2 x l1 (sphere
2), j < K // 2: 4 (K // 2) fields. For a Hamiltonian that commutes with every U x U
(Heisenberg) the loss is invariant under global rotations and convex, so the population
floor of the harmonic basis at degree K equals that of this small basis (K = 1: no
invariant field, the floor is exactly 1); it reaches high K without overfitting.

Time-dependent option (`time_degree` = Kt): every spatial field times the Legendre
polynomials P_j(2 t / t_max - 1), j = 0..Kt, for states evolved to t ~ U[0, t_max].

Solver
    A jitted step draws a fresh grid (`residual.sample_batch`), builds A and dw and adds
    to the normal equations M = sum A^T A, y = sum A^T dw, d = sum dw^2 (memory is the
    one batch's design matrix plus M, whatever the number of batches). The solve is in
    float64 on the host: Jacobi scaling D = diag(M)^(-1/2), an eigendecomposition of
    D M D, eigenvalues below `rcond` times the largest dropped (default 1e-10), and
    c = -D (D M D)^+ D y (the minimiser of least scaled norm |c / D|).

Evaluation
    The fitted field goes through `residual.residuals` as a `fields.KnownField` (its
    divergence by jacfwd, independent of the analytic one used in the fit): the held-out
    figure on a fresh grid drawn from `eval.seed` (no training key equals it) with
    `residual.ratio_with_stderr`; the training figure on the training grids themselves,
    with the same crossed standard error pooled over the independent batches. Their gap
    is the overfitting of the basis to the samples.

Per-state reference (`per_state_floor`)
    The control of DESIGN section 4 for a state-dependent V(lambda, rho): for each of the
    first S states of the neural runs' held-out set (`sample_batch(problem,
    key(eval.seed), eval.times, eval.states, ...)`, flattened time-major), the degree-K
    harmonic basis is fitted to that state alone (its own normal equations, the same
    Jacobi-scaled solve) on `fit_points` uniform points, and that state's residual is
    evaluated on `eval_points` other uniform points. Both grids are shared by all states
    (keys `per_state_keys(eval.seed)`, neither a training nor the held-out key), so the
    (S, P) grids of r^2 and dw^2 go through `residual.ratio_with_stderr` (crossed
    states x points variance). The pooled figure sum_rho L_rho(V_rho) / sum_rho L_rho(0)
    is comparable to a state-dependent network's held-out L/L0; the mean over states of
    L_rho(V_rho) / L_rho(0) to its per-state figure. A per-state field is the most any
    state-dependent field built from degree-K tangent fields can do: it is the least-squares
    reference such a network is held against, up to the fit's sampling (train vs held-out).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from lhvjax import config as config_lib
from lhvjax.fields import KnownField, evaluate
from lhvjax.residual import Batch, Problem, ratio_with_stderr, residuals, sample_batch
from lhvjax.sphere import normalize, project, uniform

__all__ = [
    "Basis",
    "HarmonicBasis",
    "InvariantBasis",
    "BASES",
    "make_basis",
    "check_rotation_invariant",
    "basis_size",
    "NormalEquations",
    "Solution",
    "gauge_terms",
    "design",
    "accumulate",
    "solve",
    "basis_field",
    "grid_residuals",
    "pooled_ratio",
    "training_keys",
    "heldout_key",
    "run_floor",
    "per_state_floor",
    "per_state_keys",
    "write_summary",
    "peak_memory_mb",
]


def basis_size(degree: int, time_degree: int | None = None, kind: str = "harmonic") -> int:
    """Number of basis fields. Harmonic: 2 spheres x 2 kinds x sum_{l=1}^K (2l+1) (K-l+1)^2;
    invariant: 4 floor(K / 2); times Kt + 1 with a time-dependent basis."""
    if kind == "invariant":
        spatial = 4 * (degree // 2)
    else:
        spatial = 4 * sum((2 * l + 1) * (degree - l + 1) ** 2 for l in range(1, degree + 1))
    return spatial * (1 if time_degree is None else time_degree + 1)


def _legendre(tau: jax.Array, n: int) -> jax.Array:
    """P_0(tau) .. P_n(tau), shape (n + 1,)."""
    P = [jnp.ones_like(tau), tau]
    for j in range(1, n):
        P.append(((2 * j + 1) * tau * P[j] - j * P[j - 1]) / (j + 1))
    return jnp.stack(P[: n + 1])


@dataclasses.dataclass(frozen=True, eq=False)
class Basis(abc.ABC):
    """Tangent fields on S^2 x S^2 of spatial degree <= `degree` (see the module doc).

    `spatial(lam)` gives the spatial fields at one point (2, 3): values (n, 2, 3) and
    their surface divergences (n,). With `time_degree`, field (i, j) (flattened i-major)
    is spatial field i times P_j(2 t / t_max - 1). Subclasses: `HarmonicBasis` (every
    field of degree <= K) and `InvariantBasis` (its rotation-equivariant part).
    """

    degree: int
    time_degree: int | None = None
    t_max: float = 0.0
    kind = ""

    def __post_init__(self):
        if self.degree < 1:
            raise ValueError(f"the basis degree must be at least 1; got {self.degree}")
        if self.time_degree is not None:
            if self.time_degree < 0:
                raise ValueError(f"time_degree must be >= 0; got {self.time_degree}")
            if not self.t_max > 0:
                raise ValueError("a time-dependent basis needs t_max > 0")
        self._build()

    def _build(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Precompute what a subclass needs (nothing by default)."""

    @property
    @abc.abstractmethod
    def n_spatial(self) -> int:
        """Number of spatial fields."""

    @abc.abstractmethod
    def spatial_labels(self) -> list[str]:
        """A readable name per spatial field."""

    @abc.abstractmethod
    def spatial(self, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The spatial fields at one point and their divergences."""

    @property
    def n_time(self) -> int:
        return 1 if self.time_degree is None else self.time_degree + 1

    @property
    def size(self) -> int:
        return self.n_spatial * self.n_time

    def labels(self) -> list[str]:
        """A name per field, in the order of `__call__`."""
        out = self.spatial_labels()
        if self.time_degree is None:
            return out
        return [f"{s} P{j}(t)" for s in out for j in range(self.n_time)]

    def time_factors(self, t: jax.Array) -> jax.Array:
        """(n_time,): 1 for a time-independent basis, else P_j(2 t / t_max - 1)."""
        if self.time_degree is None:
            return jnp.ones((1,), jnp.result_type(t, float))
        return _legendre(2 * t / self.t_max - 1, self.time_degree)

    def __call__(self, lam: jax.Array, t=None) -> tuple[jax.Array, jax.Array]:
        """All fields at one point and time: values (size, 2, 3), divergences (size,)."""
        v, d = self.spatial(lam)
        if self.time_degree is None:
            return v, d
        tf = self.time_factors(jnp.asarray(t, v.dtype))
        v = (v[:, None] * tf[None, :, None, None]).reshape(-1, *v.shape[1:])
        return v, (d[:, None] * tf[None]).reshape(-1)


class HarmonicBasis(Basis):
    """grad_k and l_k x grad_k of Y_a(l1) Y_b(l2), deg a + deg b <= K (the module doc)."""

    kind = "harmonic"

    def _build(self) -> None:
        K = self.degree
        deg = np.concatenate([np.full(2 * l + 1, l) for l in range(K + 1)])
        a, b = np.meshgrid(np.arange(deg.size), np.arange(deg.size), indexing="ij")
        a, b = a.ravel(), b.ravel()
        ok = deg[a] + deg[b] <= K
        first = ok & (deg[a] >= 1)  # nonconstant on sphere 1
        second = ok & (deg[b] >= 1)
        object.__setattr__(self, "_deg", deg)
        object.__setattr__(self, "_pairs1", (a[first], b[first]))
        object.__setattr__(self, "_pairs2", (a[second], b[second]))

    @property
    def n_spatial(self) -> int:
        return 2 * (self._pairs1[0].size + self._pairs2[0].size)

    def spatial_labels(self) -> list[str]:
        """kind_sphere[Y(l1,m1) Y(l2,m2)], m the e3nn index within degree l (-l..l)."""
        deg = self._deg
        m = np.arange(deg.size) - deg**2 - deg

        def name(kind, k, a, b):
            return f"{kind}{k}[Y({deg[a]},{m[a]}) Y({deg[b]},{m[b]})]"

        out = []
        for k, (A, B) in ((1, self._pairs1), (2, self._pairs2)):
            for kind in ("grad", "rot"):
                out += [name(kind, k, a, b) for a, b in zip(A, B, strict=True)]
        return out

    def _harmonics(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Y (n,) and the surface gradient (n, 3) at a unit vector x."""
        ls = list(range(self.degree + 1))
        f = lambda y: e3nn.sh(ls, y, normalize=True, normalization="integral")
        return f(x), project(x, jax.jacfwd(f)(x))

    def spatial(self, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Values (n_spatial, 2, 3) and surface divergences (n_spatial,) at one point."""
        x = normalize(lam)
        Y1, G1 = self._harmonics(x[0])
        Y2, G2 = self._harmonics(x[1])
        lap = -self._deg * (self._deg + 1.0)
        (a1, b1), (a2, b2) = self._pairs1, self._pairs2
        g1 = G1[a1] * Y2[b1][:, None]
        r1 = jnp.cross(x[0], G1[a1]) * Y2[b1][:, None]
        g2 = Y1[a2][:, None] * G2[b2]
        r2 = Y1[a2][:, None] * jnp.cross(x[1], G2[b2])
        z1, z2 = jnp.zeros_like(g1), jnp.zeros_like(g2)
        values = jnp.concatenate(
            [
                jnp.stack([g1, z1], 1),
                jnp.stack([r1, z1], 1),
                jnp.stack([z2, g2], 1),
                jnp.stack([z2, r2], 1),
            ]
        )
        divs = jnp.concatenate(
            [
                lap[a1] * Y1[a1] * Y2[b1],
                jnp.zeros(a1.size, x.dtype),
                lap[b2] * Y1[a2] * Y2[b2],
                jnp.zeros(a2.size, x.dtype),
            ]
        )
        return values, divs


class InvariantBasis(Basis):
    """The part of `HarmonicBasis(K)` that commutes with global rotations.

    A tangent field with V(R l1, R l2) = R V(l1, l2) for every rotation R is, at a point
    with l1 != +-l2, a combination of P_1 l2, l1 x l2 (sphere 1) and P_2 l1, l2 x l1
    (sphere 2) with coefficients that are functions of c = l1 . l2 (the only invariant
    of two unit vectors). Within degree K the invariant scalars are P_l(c) with 2l <= K,
    and grad_1 P_l(c) = P_l'(c) P_1 l2, l1 x grad_1 P_l(c) = P_l'(c) l1 x l2; so the
    invariant fields of degree <= K are P_j(c) times those four, j = 0..floor(K/2) - 1:
    4 floor(K / 2) fields (none at K = 1). Divergences:
    div_1 (f(c) P_1 l2) = (1 - c^2) f'(c) - 2 c f(c), rotated gradients are divergence-free.

    Why it matters: when H commutes with every U x U (Heisenberg) and the state ensemble
    and gauge are rotation covariant, L(R . V) = L(V) and L is convex, so averaging any
    field over rotations does not increase L: the population floor of the full basis at
    degree K equals the floor of this one, with far fewer unknowns.
    """

    kind = "invariant"

    @property
    def n_spatial(self) -> int:
        return 4 * (self.degree // 2)

    def spatial_labels(self) -> list[str]:
        J = self.degree // 2
        out = []
        for name in ("P1 l2", "l1 x l2", "P2 l1", "l2 x l1"):
            out += [f"P{j}(l1.l2) [{name}]" for j in range(J)]
        return out

    def spatial(self, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = normalize(lam)
        l1, l2 = x[0], x[1]
        J = self.degree // 2
        c = l1 @ l2
        if J == 0:
            return jnp.zeros((0, 2, 3), x.dtype), jnp.zeros((0,), x.dtype)
        f = _legendre(c, max(J - 1, 1))[:J]
        df = jax.jacfwd(lambda s: _legendre(s, max(J - 1, 1))[:J])(c)
        p12, p21 = project(l1, l2), project(l2, l1)
        dirs = jnp.stack(
            [
                jnp.stack([p12, jnp.zeros(3, x.dtype)]),
                jnp.stack([jnp.cross(l1, l2), jnp.zeros(3, x.dtype)]),
                jnp.stack([jnp.zeros(3, x.dtype), p21]),
                jnp.stack([jnp.zeros(3, x.dtype), jnp.cross(l2, l1)]),
            ]
        )  # (4, 2, 3)
        values = (dirs[:, None] * f[None, :, None, None]).reshape(-1, 2, 3)
        dgrad = (1 - c**2) * df - 2 * c * f
        zero = jnp.zeros_like(f)
        return values, jnp.concatenate([dgrad, zero, dgrad, zero])


BASES = {"harmonic": HarmonicBasis, "invariant": InvariantBasis}


def make_basis(kind: str, degree: int, time_degree: int | None = None, t_max: float = 0.0):
    try:
        cls = BASES[kind]
    except KeyError:
        raise ValueError(f"unknown basis {kind!r}; choose one of {', '.join(BASES)}") from None
    return cls(degree, time_degree, t_max)


def check_rotation_invariant(problem: Problem, tol: float = 1e-10) -> None:
    """Raise ValueError unless H commutes with every U x U (so that the invariant basis
    gives the full basis's population floor)."""
    from lhvjax.quantum import PAULI, TimeDependent

    if isinstance(problem.hamiltonian, TimeDependent):
        raise ValueError("the invariant basis needs a constant Hamiltonian")
    H = np.asarray(problem.hamiltonian)
    for s in PAULI:
        J = np.kron(s, np.eye(2)) + np.kron(np.eye(2), s)
        err = np.max(np.abs(H @ J - J @ H))
        if err > tol * max(1.0, np.max(np.abs(H))):
            raise ValueError(
                "the invariant basis gives the floor only for a Hamiltonian that commutes with "
                f"every global rotation U x U (Heisenberg); here |[H, J]| = {err:.3g}. "
                "Use the harmonic basis."
            )


# --- the design matrix and the normal equations ----------------------------------------------


def gauge_terms(problem: Problem, states, velocities, lam):
    """(w, dw/dt, grad w) for states (S,) x points (P,): (S, P), (S, P), (S, P, 2, 3).

    The pattern of `residual.residuals`: the per-state work (prepare and its JVP) once
    per state, the per-point terms vmapped over the grid.
    """
    gauge = problem.gauge
    prepared, dprepared = jax.vmap(gauge.prepare_jvp)(states, velocities)
    per_point = jax.vmap(gauge.terms, in_axes=(None, None, 0))
    return jax.vmap(per_point, in_axes=(0, 0, None))(prepared, dprepared, lam)


def design(problem: Problem, basis: Basis, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """A (G, S, P, size) and dw (G, S, P): the residual of sum_i c_i t_i is dw + A c."""
    values, divs = jax.vmap(basis.spatial)(batch.lam)  # (P, n, 2, 3), (P, n)

    def one_time(t, states, velocities):
        w, dw, grad = gauge_terms(problem, states, velocities, batch.lam)
        A = w[..., None] * divs[None] + jnp.einsum("spkc,pikc->spi", grad, values)
        tf = basis.time_factors(t)
        A = (A[..., None] * tf).reshape(*A.shape[:-1], -1)
        return A, dw

    return jax.vmap(one_time)(batch.t, batch.states, batch.velocities)


class NormalEquations(NamedTuple):
    """Sums over every (time, state, point) seen: M = A^T A, y = A^T dw, d = |dw|^2, n."""

    M: jax.Array
    y: jax.Array
    d: jax.Array
    n: jax.Array

    @classmethod
    def zeros(cls, size: int, dtype=None) -> NormalEquations:
        dtype = dtype or jnp.zeros(()).dtype
        z = jnp.zeros((), dtype)
        return cls(jnp.zeros((size, size), dtype), jnp.zeros(size, dtype), z, z)

    def add(self, A: jax.Array, dw: jax.Array) -> NormalEquations:
        A = A.reshape(-1, A.shape[-1])
        dw = dw.reshape(-1)
        return NormalEquations(
            self.M + A.T @ A, self.y + A.T @ dw, self.d + dw @ dw, self.n + dw.size
        )


def training_keys(seed: int, batches: int) -> list:
    """Batch b of a floor fit is drawn from fold_in(key(seed), b)."""
    base = jax.random.key(seed)
    return [jax.random.fold_in(base, b) for b in range(batches)]


def heldout_key(seed: int):
    return jax.random.key(seed)


def accumulate(
    problem: Problem,
    basis: Basis,
    keys,
    groups: int,
    states: int,
    points: int,
    log=None,
) -> NormalEquations:
    """Normal equations over one fresh grid per key (one jitted step, compiled once)."""

    @jax.jit
    def step(ne: NormalEquations, key) -> NormalEquations:
        batch = sample_batch(problem, key, groups, states, points)
        return ne.add(*design(problem, basis, batch))

    ne = NormalEquations.zeros(basis.size)
    for i, key in enumerate(keys):
        ne = step(ne, key)
        if log is not None:
            jax.block_until_ready(ne.M)
            log(i + 1, len(keys))
    return ne


class Solution(NamedTuple):
    c: np.ndarray  # coefficients, (size,)
    rank: int  # eigenvalues kept
    rcond: float  # relative cut-off
    cutoff: float  # absolute cut-off on the eigenvalues of the Jacobi-scaled mean M
    eigenvalues: np.ndarray  # of the Jacobi-scaled mean M, ascending
    train_quadratic: float  # (d + 2 c.y + c^T M c) / d: training L(V)/L(0) from the sums


def solve(ne: NormalEquations, rcond: float = 1e-10) -> Solution:
    """Minimum-norm minimiser c = -M^+ y of |dw + A c|^2 (float64, on the host).

    Jacobi-scaled (D = diag(M)^(-1/2)) so that the relative cut-off does not depend on
    the fields' normalisations; eigenvalues of D M D / n below rcond x the largest are
    dropped.
    """
    n = float(ne.n)
    M = np.asarray(ne.M, np.float64) / n
    y = np.asarray(ne.y, np.float64) / n
    d = float(ne.d) / n
    if M.size == 0:  # an empty basis: V = 0
        return Solution(np.zeros(0), 0, float(rcond), 0.0, np.zeros(0), 1.0)
    diag = np.diag(M).copy()
    D = np.where(diag > 0, 1 / np.sqrt(np.where(diag > 0, diag, 1.0)), 0.0)
    Ms = D[:, None] * M * D[None, :]
    evals, Q = np.linalg.eigh((Ms + Ms.T) / 2)
    cutoff = rcond * max(evals[-1], 0.0)
    keep = evals > cutoff
    Qk = Q[:, keep]
    c = -D * (Qk @ ((Qk.T @ (D * y)) / evals[keep]))
    quad = (d + 2 * c @ y + c @ M @ c) / d
    return Solution(c, int(keep.sum()), float(rcond), float(cutoff), evals, float(quad))


# --- evaluation --------------------------------------------------------------------------------


class _TimeField(KnownField):
    """A parameter-free field V(lam, t)."""

    def __call__(self, lam, t=None):
        return self.fn(lam, t)


def basis_field(basis: Basis, c) -> KnownField:
    """V = sum_i c_i t_i as a known field (V(lam) or, time-dependent, V(lam, t))."""
    c = np.asarray(c, np.float64)
    if basis.time_degree is None:

        def fn(lam):
            v, _ = basis.spatial(lam)
            return jnp.einsum("i,ikc->kc", jnp.asarray(c, v.dtype), v)

        return KnownField(fn, f"floor_K{basis.degree}")

    C = c.reshape(basis.n_spatial, basis.n_time)

    def fn_t(lam, t):
        v, _ = basis.spatial(lam)
        coef = jnp.asarray(C, v.dtype) @ basis.time_factors(jnp.asarray(t, v.dtype))
        return jnp.einsum("i,ikc->kc", coef, v)

    return _TimeField(fn_t, f"floor_K{basis.degree}_Kt{basis.time_degree}")


def _slice_states(batch: Batch, s0: int, s1: int) -> Batch:
    cut = lambda x: x[:, s0:s1]
    return batch._replace(
        states=jax.tree.map(cut, batch.states), velocities=jax.tree.map(cut, batch.velocities)
    )


def grid_residuals(problem: Problem, field, batch: Batch, chunk: int = 32, fn=None):
    """r^2 and dw^2 on the batch's grid, (G * S, P) each, computed `chunk` states at a time
    by `residual.residuals` (so memory does not grow with the number of states)."""
    fn = fn or jax.jit(lambda b: residuals(problem, field, {}, b))
    S = batch.states.a.shape[1]
    r2, d2 = [], []
    for s0 in range(0, S, chunk):
        r, dw = fn(_slice_states(batch, s0, min(s0 + chunk, S)))
        r2.append(np.asarray(r) ** 2)
        d2.append(np.asarray(dw) ** 2)
    P = batch.lam.shape[0]
    return np.concatenate(r2, 1).reshape(-1, P), np.concatenate(d2, 1).reshape(-1, P)


def pooled_ratio(grids: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """mean(num) / mean(den) over several independent equal-size grids, with a standard
    error: the crossed two-way variance of `residual.ratio_with_stderr` per grid, summed
    over grids (which are independent draws). One grid gives exactly ratio_with_stderr."""
    num = np.mean([np.mean(n) for n, _ in grids])
    den = np.mean([np.mean(d) for _, d in grids])
    q = num / den
    var = 0.0
    for n, d in grids:
        z = n - q * d
        R, C = z.shape
        var += np.var(z.mean(1), ddof=1) / R + np.var(z.mean(0), ddof=1) / C
    return float(q), float(np.sqrt(var) / len(grids) / den)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (getrusage maxrss), in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024**2 if sys.platform == "darwin" else rss / 1024


# --- the whole computation -------------------------------------------------------------------


def run_floor(
    cfg: config_lib.Config,
    degree: int,
    *,
    batches: int = 16,
    time_degree: int | None = None,
    basis: str = "harmonic",
    rcond: float = 1e-10,
    chunk: int = 32,
    train_eval: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit the floor of `cfg`'s physics at basis degree `degree` and evaluate it.

    Training grids: `batches` grids of train.states x train.points (x train.times
    groups with a time basis), keys fold_in(key(train.seed), b). Held-out grid:
    eval.states x eval.points (x eval.times) from key(eval.seed). Always float64.
    `basis` is "harmonic" (every field of degree <= K) or "invariant" (its rotation-
    equivariant part; Hamiltonians that commute with every U x U only).
    """
    with jax.enable_x64(True):
        return _run_floor(
            cfg, degree, batches, time_degree, basis, rcond, chunk, train_eval, progress
        )


def _run_floor(cfg, degree, batches, time_degree, kind, rcond, chunk, train_eval, progress):
    if batches < 1:
        raise config_lib.ConfigError(f"batches must be at least 1; got {batches}")
    t_start = time.perf_counter()
    problem = config_lib.build_problem(cfg)
    timed = time_degree is not None
    t_max = cfg.field.t_max if timed else 0.0
    problem = dataclasses.replace(problem, t_max=t_max)
    try:
        basis = make_basis(kind, degree, time_degree, t_max)
        if kind == "invariant":
            check_rotation_invariant(problem)
    except ValueError as err:  # a bad request, reported before any compute
        raise config_lib.ConfigError(str(err)) from None
    tr, ev = cfg.train, cfg.eval
    g_train = tr.times if timed else 1
    g_eval = ev.times  # the same held-out grid as the neural runs (train.py)
    keys = training_keys(tr.seed, batches)
    k_eval = heldout_key(ev.seed)
    for k in keys:  # a held-out grid must not be a training grid
        if np.array_equal(jax.random.key_data(k), jax.random.key_data(k_eval)):
            raise config_lib.ConfigError("eval.seed gives a key that a training batch uses")

    def log(i, n):
        if progress:
            print(f"  K={degree}: batch {i}/{n}", file=sys.stderr, flush=True)

    ne = accumulate(problem, basis, keys, g_train, tr.states, tr.points, log)
    t_fit = time.perf_counter()
    sol = solve(ne, rcond)
    t_solve = time.perf_counter()

    field = basis_field(basis, sol.c)
    fn = jax.jit(lambda b: residuals(problem, field, {}, b))
    held_out = sample_batch(problem, k_eval, g_eval, ev.states, ev.points)
    r2, d2 = grid_residuals(problem, field, held_out, chunk, fn)
    q, se = ratio_with_stderr(jnp.asarray(r2), jnp.asarray(d2))
    state_l0 = d2.mean(1)
    per_state = r2.mean(1) / state_l0
    t_eval = time.perf_counter()

    train_q = train_se = None
    if train_eval:
        grids = []
        for k in keys:
            batch = sample_batch(problem, k, g_train, tr.states, tr.points)
            grids.append(grid_residuals(problem, field, batch, chunk, fn))
        train_q, train_se = pooled_ratio(grids)
    t_end = time.perf_counter()

    n_train = batches * g_train * tr.states * tr.points
    return {
        "kind": "state_independent",
        "name": cfg.name,
        "hamiltonian": cfg.physics.hamiltonian,
        "gauge": cfg.physics.gauge,
        "degree": degree,
        "time_degree": time_degree,
        "basis": kind,
        "basis_size": basis.size,
        "normalized_loss": float(q),
        "normalized_loss_stderr": float(se),
        "train_normalized_loss": train_q,
        "train_normalized_loss_stderr": train_se,
        "train_normalized_loss_quadratic": sol.train_quadratic,
        # mean over held-out states of L_rho(V) / L_rho(0) (as residual.normalized_loss
        # reports it); the fit minimises the pooled L, so for this figure the value is an
        # upper bound on the basis's floor, not the floor itself
        "per_state_normalized_loss": float(per_state.mean()),
        "per_state_normalized_loss_stderr": float(per_state.std(ddof=1) / np.sqrt(per_state.size)),
        "heldout_loss": float(r2.mean()),
        "heldout_loss_zero_field": float(d2.mean()),
        # heavy tails (svd gauge near degenerate singular values): the largest single
        # state's share of the held-out L(0)
        "heldout_max_state_share_of_L0": float(state_l0.max() / state_l0.sum()),
        "samples": {
            "train": {
                "batches": batches,
                "groups": g_train,
                "states": tr.states,
                "points": tr.points,
                "total": n_train,
                "states_total": batches * g_train * tr.states,
                "seed": tr.seed,
            },
            "heldout": {
                "groups": g_eval,
                "states": ev.states,
                "points": ev.points,
                "total": g_eval * ev.states * ev.points,
                "seed": ev.seed,
            },
        },
        "samples_per_unknown": n_train / basis.size,
        "states_per_unknown": batches * g_train * tr.states / basis.size,
        "eigenvalue_cutoff_relative": rcond,
        "eigenvalue_cutoff": sol.cutoff,
        "eigenvalue_max": float(sol.eigenvalues[-1]),
        "eigenvalue_min": float(sol.eigenvalues[0]),
        "rank": sol.rank,
        "coefficient_norm": float(np.linalg.norm(sol.c)),
        "wall_time_s": t_end - t_start,
        "time_fit_s": t_fit - t_start,
        "time_solve_s": t_solve - t_fit,
        "time_heldout_s": t_eval - t_solve,
        "time_train_eval_s": t_end - t_eval,
        "peak_memory_mb": peak_memory_mb(),
        # the largest arrays of one accumulation step: A (float64) and M
        "design_matrix_mb": g_train * tr.states * tr.points * basis.size * 8 / 2**20,
        "normal_matrix_mb": basis.size**2 * 8 / 2**20,
        "dtype": "float64",
        "config": config_lib.to_dict(cfg),
        "_solution": sol,
        "_labels": basis.labels(),
    }


# --- the per-state reference -------------------------------------------------------------------


def per_state_keys(eval_seed: int) -> tuple:
    """(fit key, evaluation key) of the per-state floor's point grids: fold_in(key(eval.seed),
    1) and 2 (the held-out states come from key(eval.seed) itself)."""
    base = heldout_key(eval_seed)
    return jax.random.fold_in(base, 1), jax.random.fold_in(base, 2)


def _flat_states(batch: Batch, n: int) -> tuple:
    """The first n states (and velocities) of a (G, S) grid, flattened time-major."""
    take = lambda x: x.reshape(-1, *x.shape[2:])[:n]
    return jax.tree.map(take, batch.states), jax.tree.map(take, batch.velocities)


def _pad_states(tree, n: int):
    """Pad the leading axis to n by repeating the last entry (padded rows are dropped)."""
    pad = lambda x: (
        jnp.concatenate([x, jnp.repeat(x[-1:], n - x.shape[0], 0)]) if n > x.shape[0] else x
    )
    return jax.tree.map(pad, tree)


def _state_design(problem: Problem, prepared, dprepared, lam, values, divs):
    """A (S, P, n) and dw (S, P) for prepared states (S,) on shared points lam (P,), from
    the basis values and divergences at those points."""
    per_point = jax.vmap(problem.gauge.terms, in_axes=(None, None, 0))
    w, dw, grad = jax.vmap(per_point, in_axes=(0, 0, None))(prepared, dprepared, lam)
    A = w[..., None] * divs[None] + jnp.einsum("spkc,pikc->spi", grad, values)
    return A, dw


def per_state_floor(
    cfg: config_lib.Config,
    degree: int,
    states: int = 32,
    fit_points: int = 4096,
    eval_points: int = 4096,
    *,
    rcond: float = 1e-10,
    chunk: int = 8,
    check_states: int = 2,
    check_points: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """The per-state least-squares reference at basis degree `degree` (the module doc).

    States: the first `states` of the held-out set of `cfg` (as the neural runs draw it).
    Each gets its own harmonic degree-K field, fitted on `fit_points` shared uniform points
    and evaluated on `eval_points` others. Work is vmapped over `chunk` states at a time
    (memory about chunk x points x basis size x 8 bytes per step). The held-out residual is
    dw + A c with the analytic divergences; for the first `check_states` states its field
    part A c = w div V + V . grad w is recomputed on `check_points` points with the fitted
    field as a `KnownField` through `fields.evaluate` (divergence by jacfwd), and the
    largest difference reported relative to that state's rms dw/dt. Always float64.
    """
    with jax.enable_x64(True):
        return _per_state_floor(
            cfg,
            degree,
            states,
            fit_points,
            eval_points,
            rcond,
            chunk,
            check_states,
            check_points,
            progress,
        )


def _per_state_floor(
    cfg,
    degree,
    n_states,
    fit_points,
    eval_points,
    rcond,
    chunk,
    check_states,
    check_points,
    progress,
):
    ev = cfg.eval
    if n_states < 2:
        raise config_lib.ConfigError(
            f"states must be at least 2 (a standard error); got {n_states}"
        )
    if n_states > ev.times * ev.states:
        raise config_lib.ConfigError(
            f"states = {n_states} exceeds the held-out set (eval.times x eval.states = "
            f"{ev.times * ev.states})"
        )
    if min(fit_points, eval_points) < 2:
        raise config_lib.ConfigError("fit_points and eval_points must be at least 2")
    if chunk < 1:
        raise config_lib.ConfigError(f"chunk must be at least 1; got {chunk}")
    try:
        basis = HarmonicBasis(degree)
    except ValueError as err:
        raise config_lib.ConfigError(str(err)) from None
    t_start = time.perf_counter()
    problem = config_lib.build_problem(cfg)
    held_out = sample_batch(problem, heldout_key(ev.seed), ev.times, ev.states, ev.points)
    st, vel = _flat_states(held_out, n_states)
    k_fit, k_eval = per_state_keys(ev.seed)
    lam_fit = uniform(k_fit, fit_points, problem.n_spheres)
    lam_eval = uniform(k_eval, eval_points, problem.n_spheres)
    n_chunks = -(-n_states // chunk)
    # the per-state gauge work (the SVD and its JVP) once per state, outside jit: inside a
    # jitted computation XLA may contract S_j^2 - S_i^2 of the svd gauge's JVP rule into
    # a fused multiply-add that is not exactly 0 at i = j, and then dw/dt comes out as
    # ~1e16 (seen on the CPU for batches of 1 or 3 states); op by op it is exact
    prepared, dprepared = jax.vmap(problem.gauge.prepare_jvp)(st, vel)
    pre_p = _pad_states(prepared, n_chunks * chunk)
    dpre_p = _pad_states(dprepared, n_chunks * chunk)
    chunk_of = lambda tree, i: jax.tree.map(lambda x: x[i * chunk : (i + 1) * chunk], tree)
    spatial = jax.jit(jax.vmap(basis.spatial))

    def log(what, i, n):
        if progress:
            print(f"  K={degree} per-state {what}: chunk {i}/{n}", file=sys.stderr, flush=True)

    # fit: per-state normal equations on the shared fit grid
    @jax.jit
    def normal_equations(s, v, lam, values, divs):
        A, dw = _state_design(problem, s, v, lam, values, divs)
        M = jnp.einsum("spi,spj->sij", A, A)
        return M, jnp.einsum("spi,sp->si", A, dw), jnp.sum(dw**2, 1)

    values, divs = spatial(lam_fit)
    Ms, ys, ds = [], [], []
    for i in range(n_chunks):
        M, y, d = normal_equations(chunk_of(pre_p, i), chunk_of(dpre_p, i), lam_fit, values, divs)
        Ms.append(np.asarray(M))
        ys.append(np.asarray(y))
        ds.append(np.asarray(d))
        log("fit", i + 1, n_chunks)
    M, y, d = (np.concatenate(x)[:n_states] for x in (Ms, ys, ds))
    t_fit = time.perf_counter()

    sols = [
        solve(NormalEquations(M[s], y[s], d[s], np.asarray(fit_points, np.float64)), rcond)
        for s in range(n_states)
    ]
    C = np.stack([sol.c for sol in sols])
    t_solve = time.perf_counter()

    # residual grids r = dw + A c: in-sample (fit grid) and held-out (eval grid)
    @jax.jit
    def grid(s, v, c, lam, values, divs):
        A, dw = _state_design(problem, s, v, lam, values, divs)
        return jnp.einsum("spi,si->sp", A, c) + dw, dw

    C_p = _pad_states(jnp.asarray(C), n_chunks * chunk)

    def residual_grid(lam, vals, dvs, what):
        rs, dws = [], []
        for i in range(n_chunks):
            r, dw = grid(chunk_of(pre_p, i), chunk_of(dpre_p, i), chunk_of(C_p, i), lam, vals, dvs)
            rs.append(np.asarray(r))
            dws.append(np.asarray(dw))
            log(what, i + 1, n_chunks)
        return np.concatenate(rs)[:n_states], np.concatenate(dws)[:n_states]

    tr_r, tr_dw = residual_grid(lam_fit, values, divs, "train")
    del values, divs
    t_train = time.perf_counter()
    r, dw = residual_grid(lam_eval, *spatial(lam_eval), "held-out")
    t_eval = time.perf_counter()
    tr_r2, tr_d2, r2, d2 = tr_r**2, tr_dw**2, r**2, dw**2

    # an independent check of the field's part of the held-out residual, w div V + V.grad w:
    # the fitted field as a KnownField through fields.evaluate (V and its divergence by
    # jacfwd, as residual.residuals evaluates a field), against A c of the analytic design.
    # (Not residual.residuals itself: its dw/dt, jitted for a single state, can hit the
    # svd-gauge rounding fault above, and r - dw/dt would then lose every digit.)
    @jax.jit
    def field_part(c, prep, dprep, lam):  # c traced: one compilation for every state
        def fn(x):
            v, _ = basis.spatial(x)
            return jnp.einsum("i,ikc->kc", c, v)

        V, div = evaluate(KnownField(fn, "per_state"), {}, lam)  # (1, P, 2, 3), (1, P)
        w, _, grad = jax.vmap(problem.gauge.terms, in_axes=(None, None, 0))(prep, dprep, lam)
        return w * div[0] + jnp.sum(V[0] * grad, axis=(-1, -2))

    check_err = []
    n_check = min(check_states, n_states)
    n_pts = min(check_points, eval_points)
    for s in range(n_check):
        one = lambda x, s=s: x[s]
        f_ref = field_part(
            jnp.asarray(C[s]),
            jax.tree.map(one, prepared),
            jax.tree.map(one, dprepared),
            lam_eval[:n_pts],
        )
        diff = np.max(np.abs(np.asarray(f_ref) - (r[s, :n_pts] - dw[s, :n_pts])))
        check_err.append(float(diff / np.sqrt(d2[s].mean())))
    t_end = time.perf_counter()

    q, se = (float(x) for x in ratio_with_stderr(jnp.asarray(r2), jnp.asarray(d2)))
    tq, tse = (float(x) for x in ratio_with_stderr(jnp.asarray(tr_r2), jnp.asarray(tr_d2)))
    num, den = r2.mean(1), d2.mean(1)
    z = num - q * den  # delta method over states alone (ignores the shared points)
    se_states = float(np.std(z, ddof=1) / np.sqrt(n_states) / den.mean())
    per_state = num / den
    tr_per_state = tr_r2.mean(1) / tr_d2.mean(1)
    quad = np.array([sol.train_quadratic for sol in sols])
    ranks = np.array([sol.rank for sol in sols])
    sem = lambda x: float(np.std(x, ddof=1) / np.sqrt(x.size))
    return {
        "kind": "per_state",
        "name": cfg.name,
        "hamiltonian": cfg.physics.hamiltonian,
        "gauge": cfg.physics.gauge,
        "degree": degree,
        "basis": "harmonic",
        "basis_size": basis.size,
        # pooled over states: sum_rho L_rho(V_rho) / sum_rho L_rho(0), crossed s.e.
        "normalized_loss": q,
        "normalized_loss_stderr": se,
        "normalized_loss_stderr_states_only": se_states,
        "train_normalized_loss": tq,
        "train_normalized_loss_stderr": tse,
        # mean over states of L_rho(V_rho) / L_rho(0)
        "per_state_normalized_loss": float(per_state.mean()),
        "per_state_normalized_loss_stderr": sem(per_state),
        "per_state_normalized_loss_median": float(np.median(per_state)),
        "train_per_state_normalized_loss": float(tr_per_state.mean()),
        "train_per_state_normalized_loss_stderr": sem(tr_per_state),
        # in-sample figures from the normal equations (agree with the train grid's)
        "train_quadratic_max_abs_diff": float(np.max(np.abs(quad - tr_per_state))),
        "heldout_loss": float(r2.mean()),
        "heldout_loss_zero_field": float(d2.mean()),
        "heldout_max_state_share_of_L0": float(den.max() / den.sum()),
        "states_normalized_loss": per_state.tolist(),
        "states_train_normalized_loss": tr_per_state.tolist(),
        "states_loss_zero_field": den.tolist(),
        "check_states": n_check,
        "check_points": n_pts,
        "check_max_abs_diff_relative": max(check_err) if check_err else None,
        "samples": {
            "states": n_states,
            "states_from": f"first {n_states} of sample_batch(key(eval.seed={ev.seed}), "
            f"eval.times={ev.times}, eval.states={ev.states}), time-major",
            "fit_points": fit_points,
            "eval_points": eval_points,
            "points_keys": "fold_in(key(eval.seed), 1) fit, fold_in(key(eval.seed), 2) eval",
        },
        "samples_per_unknown": fit_points / basis.size,
        "eigenvalue_cutoff_relative": rcond,
        "rank_min": int(ranks.min()),
        "rank_max": int(ranks.max()),
        "eigenvalue_min": float(min(sol.eigenvalues[0] for sol in sols)),
        "eigenvalue_max": float(max(sol.eigenvalues[-1] for sol in sols)),
        "coefficient_norm_max": float(np.max(np.linalg.norm(C, axis=1))),
        "chunk": chunk,
        "wall_time_s": t_end - t_start,
        "time_fit_s": t_fit - t_start,
        "time_solve_s": t_solve - t_fit,
        "time_train_eval_s": t_train - t_solve,
        "time_heldout_s": t_eval - t_train,
        "time_check_s": t_end - t_eval,
        "peak_memory_mb": peak_memory_mb(),
        # the largest arrays of one step: A for a chunk of states, and the basis values
        "design_matrix_mb": chunk * max(fit_points, eval_points) * basis.size * 8 / 2**20,
        "basis_values_mb": max(fit_points, eval_points) * basis.size * 7 * 8 / 2**20,
        "dtype": "float64",
        "config": config_lib.to_dict(cfg),
        "_coefficients": C,
        "_labels": basis.labels(),
    }


def write_summary(out: str | Path, result: dict) -> Path:
    """DIR/summary.json (everything but the arrays) and DIR/coefficients.npz."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    sol = result.get("_solution")
    if "_coefficients" in result:  # per-state: one row of coefficients per state
        np.savez(
            out / "coefficients.npz",
            c=result["_coefficients"],
            labels=np.asarray(result["_labels"]),
        )
    elif sol is not None:
        np.savez(
            out / "coefficients.npz",
            c=sol.c,
            eigenvalues=sol.eigenvalues,
            labels=np.asarray(result["_labels"]),
        )
    return out / "summary.json"


def _json_default(x):
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")
