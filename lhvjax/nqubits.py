"""N qubits: Pauli-tensor states, 2-local switched Hamiltonians, the linear gauge on
(S^2)^N and the strong continuity residual (DESIGN sections 2-4, for any N).

A state is held in Pauli-tensor coordinates: an array R of shape (4,) * N (batches add
leading axes) with

    rho = 2^-N sum_mu R_mu sigma_mu1 x ... x sigma_muN,    R_mu = tr(rho sigma_mu),

sigma_0 = 1, so R_0...0 = 1. The map R -> rho is linear and every function here is
jittable and vmappable; the number of qubits is passed explicitly, because a batch axis
of length 4 cannot be told apart from a qubit axis.

Linear gauge: w(lambda) = sum_mu R_mu prod_{k: mu_k != 0} 2 lambda_{k, mu_k}, the density
relative to uniform on (S^2)^N. Writing e(l) = (1, 2 l) in R^4, w = <R, e(l_1) x ... x e(l_N)>;
for fixed lambda, w = tr(rho prod_k (1 + 2 l_k.sigma)), which reproduces every N-party
sign correlation E[prod_k sign(n_k.l_k)] = tr(rho n_1.sigma x ... x n_N.sigma).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lhvjax.gauges import InadmissibleStateError, Visibility
from lhvjax.quantum import PAULI, _unit
from lhvjax.residual import ratio_with_stderr
from lhvjax.sphere import normalize, project, uniform, value_and_div

__all__ = [
    "SIGMA",
    "to_density",
    "from_density",
    "scale",
    "maximally_mixed",
    "product_state",
    "random_states",
    "separable_states",
    "noisy_ball_visibility",
    "Coupling",
    "Zeeman",
    "Drive",
    "Hamiltonian",
    "edges",
    "heisenberg",
    "schedule",
    "moments",
    "LinearGauge",
    "Problem",
    "Batch",
    "sample_batch",
    "field_terms",
    "residuals",
    "loss",
    "squared_residuals",
    "normalized_loss",
]

SIGMA = np.concatenate([np.eye(2, dtype=np.complex128)[None], PAULI])  # (4, 2, 2), sigma_0 = 1
# sigma_a sigma_b = sum_c F[a, b, c] sigma_c (F = tr(sigma_a sigma_b sigma_c) / 2)
_F = np.einsum("axy,byz,czx->abc", SIGMA, SIGMA, SIGMA) / 2


def _check_R(R, n: int) -> None:
    if n < 1:
        raise ValueError(f"need at least one qubit; got n = {n}")
    if jnp.ndim(R) < n or jnp.shape(R)[jnp.ndim(R) - n :] != (4,) * n:
        raise ValueError(
            f"an {n}-qubit state in Pauli-tensor coordinates has shape "
            f"(..., {', '.join('4' * n)}); got {jnp.shape(R)}"
        )


def _complex(dtype):
    return jnp.result_type(dtype, jnp.complex64)


def to_density(R: jax.Array, n: int) -> jax.Array:
    """rho (..., 2^N, 2^N) = 2^-N sum_mu R_mu sigma_mu1 x ... x sigma_muN."""
    _check_R(R, n)
    b = jnp.ndim(R) - n
    x = jnp.asarray(R).astype(_complex(jnp.asarray(R).dtype))
    S = jnp.asarray(SIGMA, x.dtype)
    for _ in range(n):
        # contract the first remaining Pauli index; its (x_k, y_k) pair lands at the end
        x = jnp.tensordot(x, S, axes=([b], [0]))
    batch = x.shape[:b]
    perm = list(range(b)) + [b + 2 * k for k in range(n)] + [b + 2 * k + 1 for k in range(n)]
    return x.transpose(perm).reshape(*batch, 2**n, 2**n) / 2**n


def from_density(rho: jax.Array, n: int) -> jax.Array:
    """R_mu = tr(rho sigma_mu) of rho (..., 2^N, 2^N), shape (..., 4, ..., 4), real."""
    rho = jnp.asarray(rho)
    d = 2**n
    if rho.shape[-2:] != (d, d):
        raise ValueError(f"an {n}-qubit density matrix is (..., {d}, {d}); got {rho.shape}")
    batch = rho.shape[:-2]
    b = len(batch)
    x = rho.reshape(*batch, *(2,) * (2 * n))
    perm = list(range(b)) + [a for k in range(n) for a in (b + k, b + n + k)]
    x = x.transpose(perm)  # batch + (x1, y1, ..., xN, yN)
    S = jnp.asarray(SIGMA, x.dtype)
    for _ in range(n):
        # tr(rho sigma) = sum_xy rho[x, y] sigma[y, x]: contract (x_k, y_k) with sigma[mu, y, x]
        x = jnp.tensordot(x, S, axes=([b, b + 1], [2, 1]))
    return jnp.real(x)


def maximally_mixed(n: int, dtype=None) -> jax.Array:
    """R of 1 / 2^N: one at mu = 0...0, zero elsewhere."""
    dtype = dtype or jnp.zeros(()).dtype
    return jnp.zeros((4,) * n, dtype).at[(0,) * n].set(1)


def scale(R: jax.Array, v, n: int) -> jax.Array:
    """v rho + (1 - v) 1/2^N: every coordinate but R_0...0 times v."""
    _check_R(R, n)
    v = jnp.asarray(v, R.dtype)
    return v * R + (1 - v) * maximally_mixed(n, R.dtype)


def product_state(r: jax.Array) -> jax.Array:
    """R of the product state (1 + r_1.sigma)/2 x ... from Bloch vectors r (..., N, 3)."""
    e = jnp.concatenate([jnp.ones_like(r[..., :1]), r], -1)  # (..., N, 4)
    return _outer(e)


def _outer(e: jax.Array) -> jax.Array:
    """e_1 x ... x e_N of e (..., N, 4), shape (..., 4, ..., 4)."""
    n = e.shape[-2]
    out = e[..., 0, :]
    for k in range(1, n):
        out = out[..., None] * e[..., k, :].reshape(*e.shape[:-2], *(1,) * k, 4)
    return out


# --- ensembles -------------------------------------------------------------------------------


def _check_visibility(v) -> None:
    if not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"visibility must lie in [0, 1]; got {v}")


def random_states(key, count: int, n: int, visibility: float = 1.0, dtype=None) -> jax.Array:
    """`count` states v sigma + (1 - v) 1/2^N of the noisy ball S_v, shape (count, 4, ..., 4).

    sigma is Hilbert-Schmidt random, G G^dag / tr(G G^dag) with G a complex Ginibre
    2^N x 2^N matrix: full rank with probability one, so S_v is sampled from its interior.
    """
    dtype = dtype or jnp.zeros(()).dtype
    _check_visibility(visibility)
    d = 2**n
    kr, ki = jax.random.split(key)
    shape = (count, d, d)
    G = jax.random.normal(kr, shape, dtype) + 1j * jax.random.normal(ki, shape, dtype)
    sigma = G @ jnp.swapaxes(G.conj(), -1, -2)
    sigma = sigma / jnp.trace(sigma, axis1=-2, axis2=-1)[..., None, None]
    return scale(from_density(sigma, n).astype(dtype), visibility, n)


def separable_states(
    key, count: int, n: int, components: int = 4, visibility: float = 1.0, dtype=None
) -> jax.Array:
    """`count` mixtures of `components` random product pure states (Haar Bloch vectors,
    flat Dirichlet weights), mixed with noise: v sigma_sep + (1 - v) 1/2^N."""
    dtype = dtype or jnp.zeros(()).dtype
    _check_visibility(visibility)
    if components < 1:
        raise ValueError(f"a separable mixture needs components >= 1; got {components}")
    kr, kw = jax.random.split(key)
    r = normalize(jax.random.normal(kr, (count, components, n, 3), dtype))
    p = jax.random.exponential(kw, (count, components), dtype)
    p = p / jnp.sum(p, -1, keepdims=True)
    R = jnp.einsum("sc,sc...->s...", p, product_state(r))
    return scale(R, visibility, n)


def noisy_ball_visibility(R: jax.Array, n: int) -> jax.Array:
    """The smallest v with rho in S_v: 1 - 2^N lambda_min(rho) (batched)."""
    return 1 - 2**n * jnp.linalg.eigvalsh(to_density(R, n))[..., 0]


# --- Hamiltonians ----------------------------------------------------------------------------


class Coupling(NamedTuple):
    """XXZ coupling (J/4)(X_i X_j + Y_i Y_j + delta Z_i Z_j), on for start <= t < end.

    delta = 1 is Heisenberg, J (sigma_i . sigma_j)/4, the paper's two-qubit term."""

    i: int
    j: int
    J: float = 1.0
    delta: float = 1.0
    start: float = -math.inf
    end: float = math.inf


class Zeeman(NamedTuple):
    """A local field (omega/2) n.sigma_k, on for start <= t < end: qubit k's Bloch vector
    precesses, r_k' = omega n x r_k."""

    k: int
    omega: float
    n: tuple[float, float, float] = (0.0, 0.0, 1.0)
    start: float = -math.inf
    end: float = math.inf


class Drive(NamedTuple):
    """What a field may know about H at time t: t itself, the local field vectors
    h_j = omega_j(t) n_j (N, 3), and the coupling graph A (N, N), A_ij = sum of |J_e(t)|
    over the couplings joining i and j (nonzero exactly when they interact at t)."""

    t: jax.Array
    h: jax.Array
    A: jax.Array


def _smoothstep(x):
    x = jnp.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _kron_all(mats):
    out = np.ones((1, 1), np.complex128)
    for m in mats:
        out = np.kron(out, m)
    return out


def _pauli_string(n: int, ops: dict[int, int]) -> np.ndarray:
    return _kron_all([SIGMA[ops.get(k, 0)] for k in range(n)])


@dataclasses.dataclass(frozen=True, eq=False)
class Hamiltonian:
    """H(t) = sum_e s_e(t) (J_e/4)(XX + YY + delta_e ZZ)_e + sum_f s_f(t) (omega_f/2) n_f.sigma.

    s(t) is the switching function of each term: the indicator of [start, end) when
    ramp = 0 (piecewise constant: evolution is exact, one exponential per interval), and
    for ramp > 0 the C^1 smoothstep rising over [start, start + ramp] and falling over
    [end - ramp, end], still exactly zero outside [start, end] so that the interaction
    graph changes at definite times (evolution: `steps` exponential-midpoint steps).
    """

    n_qubits: int
    couplings: tuple[Coupling, ...] = ()
    zeeman: tuple[Zeeman, ...] = ()
    ramp: float = 0.0
    steps: int = 200

    def __post_init__(self):
        n = self.n_qubits
        object.__setattr__(self, "couplings", tuple(Coupling(*c) for c in self.couplings))
        object.__setattr__(self, "zeeman", tuple(Zeeman(*z) for z in self.zeeman))
        if n < 1:
            raise ValueError(f"need n_qubits >= 1; got {n}")
        for c in self.couplings:
            if not (0 <= c.i < n and 0 <= c.j < n and c.i != c.j):
                raise ValueError(f"coupling {c} needs two different qubits in 0..{n - 1}")
            if not c.start < c.end:
                raise ValueError(f"coupling {c} is never on: start must be < end")
        for z in self.zeeman:
            if not 0 <= z.k < n:
                raise ValueError(f"local field {z} acts on a qubit outside 0..{n - 1}")
            if not z.start < z.end:
                raise ValueError(f"local field {z} is never on: start must be < end")
        if self.ramp < 0:
            raise ValueError(f"ramp must be >= 0; got {self.ramp}")
        # static per-term data (numpy, float64/complex128), cast to the state dtype on use
        mats, gens, hs, As = [], [], [], []
        for c in self.couplings:
            w = np.array([1.0, 1.0, c.delta]) * c.J / 4
            mats.append(sum(w[a] * _pauli_string(n, {c.i: a + 1, c.j: a + 1}) for a in range(3)))
            # -i [sigma_a x sigma_a, .] in Pauli coordinates of the pair (i, j): left
            # multiplication acts as F[a, mu, c] on each index, right as F[mu, a, c]
            K = 0
            for a in range(3):
                L = np.einsum("mc,nd->cdmn", _F[a + 1], _F[a + 1])
                Rm = np.einsum("mc,nd->cdmn", _F[:, a + 1], _F[:, a + 1])
                K = K + w[a] * np.real(-1j * (L - Rm))
            i, j = sorted((c.i, c.j))
            gens.append(((i, j), K))
            hs.append(np.zeros((n, 3)))
            A = np.zeros((n, n))
            A[c.i, c.j] = A[c.j, c.i] = abs(c.J)
            As.append(A)
        for z in self.zeeman:
            nz = _unit(z.n, "Zeeman n")
            w = z.omega * nz / 2
            mats.append(sum(w[a] * _pauli_string(n, {z.k: a + 1}) for a in range(3)))
            K = sum(w[a] * np.real(-1j * (_F[a + 1] - _F[:, a + 1]).T) for a in range(3))
            gens.append(((z.k,), K))
            h = np.zeros((n, 3))
            h[z.k] = z.omega * nz
            hs.append(h)
            As.append(np.zeros((n, n)))
        m = len(mats)
        d = 2**n
        object.__setattr__(self, "_mats", np.stack(mats) if m else np.zeros((0, d, d), complex))
        object.__setattr__(self, "_gens", tuple(gens))
        object.__setattr__(self, "_h", np.stack(hs) if m else np.zeros((0, n, 3)))
        object.__setattr__(self, "_A", np.stack(As) if m else np.zeros((0, n, n)))
        terms = [*self.couplings, *self.zeeman]
        object.__setattr__(self, "_start", np.array([x.start for x in terms], float))
        object.__setattr__(self, "_end", np.array([x.end for x in terms], float))

    # -- time dependence ------------------------------------------------------------------

    @property
    def piecewise_constant(self) -> bool:
        return self.ramp == 0

    def switches(self, t) -> jax.Array:
        """s(t) for every term (couplings first, then local fields), shape (terms,)."""
        t = jnp.asarray(t)
        start = jnp.asarray(self._start, t.dtype)
        end = jnp.asarray(self._end, t.dtype)
        if self.piecewise_constant:
            return ((t >= start) & (t < end)).astype(t.dtype)
        # (t - start)/ramp is +inf for an open start: smoothstep(inf) = 1
        return _smoothstep((t - start) / self.ramp) * _smoothstep((end - t) / self.ramp)

    def switch_times(self) -> np.ndarray:
        """Sorted finite times > 0 at which some term switches (piecewise constant H)."""
        ts = np.concatenate([self._start, self._end])
        return np.unique(ts[np.isfinite(ts) & (ts > 0)])

    def matrix(self, t, dtype=None) -> jax.Array:
        """H(t), a 2^N x 2^N Hermitian matrix."""
        s = self.switches(jnp.asarray(t, dtype or jnp.zeros(()).dtype))
        return jnp.einsum("g,gxy->xy", s.astype(_complex(s.dtype)), self._mats.astype(_cd(s)))

    def adjacency(self, t, dtype=None) -> jax.Array:
        """A(t) (N, N): A_ij = sum of |J_e| s_e(t) over couplings joining i, j; 0 when uncoupled."""
        s = self.switches(jnp.asarray(t, dtype or jnp.zeros(()).dtype))
        return jnp.einsum("g,gij->ij", s, jnp.asarray(self._A, s.dtype))

    def local_fields(self, t, dtype=None) -> jax.Array:
        """h(t) (N, 3): h_j = sum of omega_f s_f(t) n_f over the local fields on qubit j."""
        s = self.switches(jnp.asarray(t, dtype or jnp.zeros(()).dtype))
        return jnp.einsum("g,gjc->jc", s, jnp.asarray(self._h, s.dtype))

    def drive(self, t, dtype=None) -> Drive:
        t = jnp.asarray(t, dtype or jnp.zeros(()).dtype)
        return Drive(t, self.local_fields(t), self.adjacency(t))

    @functools.cached_property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        """Directed pairs (j, i) that are coupled at some time: the only messages a local
        field needs (a static superset of every A(t)'s support)."""
        p = {(c.i, c.j) for c in self.couplings} | {(c.j, c.i) for c in self.couplings}
        return tuple(sorted(p))

    # -- dynamics -------------------------------------------------------------------------

    def velocity(self, t, R: jax.Array) -> jax.Array:
        """dR/dt of -i[H(t), rho] computed in Pauli coordinates (one state, shape (4,)*N):
        each 2-local term acts on its one or two Pauli indices only."""
        n = self.n_qubits
        _check_R(R, n)
        s = self.switches(jnp.asarray(t, R.dtype))
        out = jnp.zeros_like(R)
        for g, (axes, K) in enumerate(self._gens):
            k = len(axes)
            Kj = jnp.asarray(K, R.dtype)  # (c..., mu...)
            y = jnp.tensordot(R, Kj, axes=(list(axes), list(range(k, 2 * k))))
            out = out + s[g] * jnp.moveaxis(y, list(range(n - k, n)), list(axes))
        return out

    def velocity_matrix(self, t, R: jax.Array) -> jax.Array:
        """dR/dt from the matrices, from_density(-i[H(t), rho]) (reference; batched)."""
        n = self.n_qubits
        rho = to_density(R, n)
        H = self.matrix(t, R.dtype).astype(rho.dtype)
        return from_density(-1j * (H @ rho - rho @ H), n).astype(R.dtype)

    def propagator(self, t, dtype=None) -> jax.Array:
        """U(t) = T exp(-i int_0^t H), t >= 0 (scalar t; vectorise with jnp.vectorize).

        Piecewise constant H: one exact exponential per interval between switching times
        (eigendecompositions precomputed). Otherwise `steps` exponential-midpoint steps.
        """
        dtype = dtype or jnp.zeros(()).dtype
        t = jnp.asarray(t, dtype)
        cd = _complex(dtype)
        if not self.piecewise_constant:
            n = max(1, int(self.steps))
            dt = t / n

            def step(U, k):
                E, W = jnp.linalg.eigh(self.matrix((k + 0.5) * dt, dtype).astype(cd))
                Uk = (W * jnp.exp(-1j * E * dt)[None, :]) @ W.conj().T
                return (Uk @ U).astype(cd), None

            U, _ = jax.lax.scan(step, jnp.eye(2**self.n_qubits, dtype=cd), jnp.arange(n))
            return U
        U = jnp.eye(2**self.n_qubits, dtype=cd)
        for lo, hi, E, W in self._segments():
            d = jnp.clip(jnp.minimum(t, hi) - lo, 0.0, None)
            phase = jnp.exp(-1j * jnp.asarray(E, dtype) * d)
            Wj = jnp.asarray(W, cd)
            U = (Wj * phase[None, :]) @ Wj.conj().T @ U
        return U

    def _segments(self):
        b = np.concatenate([[0.0], self.switch_times(), [np.inf]])
        cached = self.__dict__.get("_segment_cache")
        if cached is None:
            cached = []
            for lo, hi in zip(b[:-1], b[1:], strict=True):
                mid = lo + 1.0 if np.isinf(hi) else (lo + hi) / 2
                s = ((mid >= self._start) & (mid < self._end)).astype(float)
                H = np.einsum("g,gxy->xy", s, self._mats)
                E, W = np.linalg.eigh(H)
                cached.append((lo, hi, E, W))
            object.__setattr__(self, "_segment_cache", cached)
        return cached

    def evolve(self, R: jax.Array, t) -> jax.Array:
        """R(t) of rho(t) = U(t) rho U(t)^dag for t >= 0 (batched over R and t together)."""
        n = self.n_qubits
        _check_R(R, n)
        if not isinstance(t, jax.core.Tracer) and np.any(np.asarray(t) < 0):
            raise ValueError(f"evolve runs forward from t = 0; got t = {t}")
        U = jnp.vectorize(lambda s: self.propagator(s, R.dtype), signature="()->(i,j)")(
            jnp.asarray(t, R.dtype)
        )
        rho = to_density(R, n)
        return from_density(U @ rho @ jnp.swapaxes(U.conj(), -1, -2), n).astype(R.dtype)


def _cd(x):
    return _complex(x.dtype)


def edges(n: int, graph: str | Sequence[tuple[int, int]] = "chain") -> tuple[tuple[int, int], ...]:
    """Edges of a 'chain' (0-1-...-(N-1)), a 'ring' (chain plus (N-1, 0)) or an explicit list."""
    if graph == "chain":
        return tuple((k, k + 1) for k in range(n - 1))
    if graph == "ring":
        if n < 3:
            raise ValueError(f"a ring needs at least 3 qubits; got {n} (use 'chain')")
        return tuple((k, (k + 1) % n) for k in range(n))
    if isinstance(graph, str):
        raise ValueError(f"unknown graph {graph!r}; use 'chain', 'ring' or a list of (i, j)")
    return tuple((int(i), int(j)) for i, j in graph)


def heisenberg(
    n: int,
    graph: str | Sequence[tuple[int, int]] = "chain",
    J: float = 1.0,
    delta: float = 1.0,
    fields: Sequence[Zeeman] = (),
) -> Hamiltonian:
    """Constant XXZ (Heisenberg for delta = 1) couplings J on every edge of the graph."""
    cs = tuple(Coupling(i, j, J, delta) for i, j in edges(n, graph))
    return Hamiltonian(n, cs, tuple(fields))


def schedule(
    n: int,
    pulses: Sequence[tuple[float, float, tuple[int, int], float]],
    delta: float = 1.0,
    fields: Sequence[Zeeman] = (),
    ramp: float = 0.0,
) -> Hamiltonian:
    """Couplings switched on and off: pulses (t_start, t_end, (i, j), J), each XXZ(delta)."""
    cs = tuple(Coupling(i, j, J, delta, t0, t1) for t0, t1, (i, j), J in pulses)
    return Hamiltonian(n, cs, tuple(fields), ramp)


# --- the linear gauge ------------------------------------------------------------------------


def moments(lam: jax.Array) -> jax.Array:
    """E(lambda) = e(l_1) x ... x e(l_N), e(l) = (1, 2 l), shape (4,) * N: w = <R, E>."""
    e = jnp.concatenate([jnp.ones_like(lam[..., :1]), 2 * lam], -1)
    return _outer(e)


@functools.cache
def _linear_visibility(n: int) -> Visibility:
    # For fixed lambda, w - 1 = v tr(sigma O) with O = prod_k (1 + 2 l_k.sigma) - 1, so the
    # worst state of S_v gives 1 + v lambda_min(O). Each factor is unitarily equivalent to
    # 1 + 2 sigma_z (eigenvalues 3, -1), so the spectrum of O is the same at every lambda:
    # compute it at l_k = z for all k.
    one = np.eye(2) + 2 * PAULI[2]
    O = _kron_all([one] * n) - np.eye(2**n)
    low = float(np.linalg.eigvalsh(O)[0])
    return Visibility(
        -1.0 / low,
        f"1 / -lambda_min(prod_k (1 + 2 l_k.sigma) - 1) = 1 / {-low:g}, the same at every lambda",
    )


class LinearGauge:
    """w(lambda) = <R, e(l_1) x ... x e(l_N)>, relative to uniform on (S^2)^N.

    For N = 2 this is `lhvjax.gauges.Linear`: 1 + 2 a.l1 + 2 b.l2 + 4 l1^T T l2.
    """

    name = "linear"

    def __init__(self, n: int, margin_starts: int = 64, margin_sweeps: int = 20):
        if n < 1:
            raise ValueError(f"need n >= 1 qubits; got {n}")
        self.n = n
        self.margin_starts = margin_starts
        self.margin_sweeps = margin_sweeps
        # one compilation per gauge instance (per input shape), reused by every check
        self._margins = jax.jit(jax.vmap(self.margin))

    def density(self, R: jax.Array, lam: jax.Array) -> jax.Array:
        """w for one state R (4,)*N and one point lam (N, 3)."""
        return jnp.sum(R * moments(lam))

    def visibility(self) -> Visibility:
        """v* = 1 / (1 + 3^(N-1)), computed from the spectrum of the moment operator."""
        return _linear_visibility(self.n)

    def check_visibility(self, v: float) -> None:
        vs = self.visibility()
        if not 0 < v <= vs.value * (1 + 1e-12):
            raise InadmissibleStateError(
                f"visibility {v} is not admissible for the {self.n}-qubit linear gauge: its "
                f"density is nonnegative on all of S_v only for 0 < v <= v* = {vs.value:.6f} "
                f"({vs.method}). Set the visibility to at most {vs.value:.4f}."
            )

    def margin(self, R: jax.Array, key=None) -> jax.Array:
        """min over (S^2)^N of w found by block-coordinate descent (one state).

        w is affine in each l_k, so the exact minimiser over l_k with the others fixed is
        -grad_k w / |grad_k w|; sweeps never increase w. From `margin_starts` uniform
        starts: an upper bound on the true minimum, so margin < 0 proves the state
        inadmissible. States of S_v with v <= v* are admissible by the bound above.
        """
        n = self.n
        key = jax.random.key(0) if key is None else key
        x0 = uniform(key, self.margin_starts, n, R.dtype)
        grad = jax.grad(lambda x: self.density(R, x))

        def sweep(_, x):
            for k in range(n):
                g = grad(x)[k]
                x = x.at[k].set(-g / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(R.dtype).tiny))
            return x

        xs = jax.vmap(lambda x: jax.lax.fori_loop(0, self.margin_sweeps, sweep, x))(x0)
        return jnp.min(jax.vmap(lambda x: self.density(R, x))(xs))

    def check(self, R: jax.Array, tol: float = 1e-9) -> None:
        """Raise `InadmissibleStateError` if the density of some state in the batch is negative."""
        n = self.n
        _check_R(R, n)
        flat = jnp.reshape(R, (-1,) + (4,) * n)
        m = np.asarray(self._margins(flat))
        bad = np.flatnonzero(~(m >= -tol))
        if bad.size:
            vs = self.visibility()
            raise InadmissibleStateError(
                f"{bad.size} of {m.size} states have a negative {n}-qubit linear-gauge density "
                f"(first: index {bad[0]}, min w = {m[bad[0]]:.3g}). Every state of S_v is "
                f"admissible for v <= v* = {vs.value:.6f}; mix the states with more noise."
            )

    def sample(self, key, R: jax.Array, count: int) -> jax.Array:
        """`count` exact samples (count, N, 3) of p_rho for one state, by rejection from
        uniform proposals under the bound w <= 1 + sum_{mu != 0} |R_mu| 2^{weight(mu)}."""
        self.check(R)
        n = self.n
        weight = sum(
            np.arange(4).reshape((1,) * k + (4,) + (1,) * (n - k - 1)) > 0 for k in range(n)
        )
        bound = float(jnp.sum(jnp.abs(R) * 2.0**weight))
        out, have = [], 0
        while have < count:
            key, kp, ka = jax.random.split(key, 3)
            m = max(256, 1 << math.ceil(math.log2(1.2 * (count - have) * bound)))
            lam = uniform(kp, m, n, R.dtype)
            w = jax.vmap(self.density, in_axes=(None, 0))(R, lam)
            keep = np.asarray(jax.random.uniform(ka, (m,), R.dtype) * bound < w)
            out.append(np.asarray(lam)[keep])
            have += int(keep.sum())
        return jnp.asarray(np.concatenate(out)[:count])


# --- the residual ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """N-qubit states S_v (or a noisy separable ensemble) under H(t), in the linear gauge.

    t_max = 0 draws states from the ensemble itself; t_max > 0 draws rho0 and evolves it to
    t ~ U[0, t_max]. `divergence` is "exact" (jacfwd, 3N JVPs per point) or "hutchinson"
    (`probes` random JVPs; the training loss multiplies two independent estimates so that
    it stays unbiased, E[r_a r_b] = r^2, where a squared single estimate would add w^2 var).
    """

    hamiltonian: Hamiltonian
    visibility: float
    t_max: float = 0.0
    ensemble: str = "hs"
    components: int = 4
    divergence: str = "exact"
    probes: int = 1

    def __post_init__(self):
        if self.ensemble not in ("hs", "separable"):
            raise ValueError(f"unknown ensemble {self.ensemble!r}; choose 'hs' or 'separable'")
        if self.divergence not in ("exact", "hutchinson"):
            raise ValueError(
                f"unknown divergence {self.divergence!r}; choose 'exact' or 'hutchinson'"
            )
        if self.t_max < 0:
            raise ValueError(f"t_max must be >= 0; got {self.t_max}")
        self.gauge.check_visibility(self.visibility)

    @property
    def n(self) -> int:
        return self.hamiltonian.n_qubits

    @functools.cached_property
    def gauge(self) -> LinearGauge:
        return LinearGauge(self.n)


class Batch(NamedTuple):
    t: jax.Array  # (G,)
    R: jax.Array  # (G, S, 4, ..., 4)
    dR: jax.Array  # d/dt of R, same shape
    lam: jax.Array  # (P, N, 3)


def sample_batch(problem: Problem, key, groups: int, states: int, points: int, dtype=None):
    """A fresh grid: `groups` times, `states` states at each, `points` uniform points."""
    dtype = dtype or jnp.zeros(()).dtype
    n, H = problem.n, problem.hamiltonian
    kt, ks, kp = jax.random.split(key, 3)
    if problem.ensemble == "hs":
        R0 = random_states(ks, groups * states, n, problem.visibility, dtype)
    else:
        R0 = separable_states(ks, groups * states, n, problem.components, problem.visibility, dtype)
    R0 = R0.reshape(groups, states, *(4,) * n)
    if problem.t_max > 0:
        t = jax.random.uniform(kt, (groups,), dtype) * problem.t_max
        R = jax.vmap(lambda r, ti: H.evolve(r, ti))(R0, t)
    else:
        t, R = jnp.zeros((groups,), dtype), R0
    dR = jax.vmap(lambda rs, ti: jax.vmap(lambda r: H.velocity(ti, r))(rs))(R, t)
    return Batch(t, R, dR, uniform(kp, points, n, dtype))


def field_terms(field, params, lam: jax.Array, drive: Drive, mode="exact", key=None, probes=1):
    """V (P, N, 3) and divergence estimates (K, P) at points lam (P, N, 3).

    mode "exact": K = 1, the surface divergence from jacfwd. "hutchinson": K = 2
    independent unbiased estimates with `probes` probes each (z = P eps; one JVP per probe,
    linearised once per point).
    """
    if lam.ndim != 3 or lam.shape[-1] != 3:
        raise ValueError(f"points must have shape (P, N, 3); got {lam.shape}")

    def fn(x):
        return field.apply(params, x, drive)

    if mode == "exact":
        V, div = jax.vmap(lambda x: value_and_div(fn, x))(lam)
        return V, div[None]
    if mode != "hutchinson":
        raise ValueError(f"unknown divergence mode {mode!r}; choose 'exact' or 'hutchinson'")
    if key is None:
        raise ValueError("the Hutchinson divergence needs a PRNG key")

    def one(x, k):
        v, jvp = jax.linearize(fn, x)
        z = project(x, jax.random.normal(k, (2 * probes, *x.shape), x.dtype))
        est = jnp.sum(z * jax.vmap(jvp)(z), axis=(-1, -2))
        return v, jnp.mean(est.reshape(2, probes), axis=1)

    V, div = jax.vmap(one)(lam, jax.random.split(key, lam.shape[0]))
    return V, div.T


def residuals(problem: Problem, field, params, batch: Batch, mode=None, key=None):
    """(r, dw/dt): r (G, K, S, P) with K divergence estimates (1 for exact), dw (G, S, P).

    r = dw/dt + w div V + V . grad w. With m(lambda) = vec E(lambda), w = R . m,
    dw/dt = R' . m and V . grad w = R . (D m [V]) (a JVP along the tangent V), so the field
    and m are computed once per (time, point) and the states enter through matmuls.
    """
    mode = problem.divergence if mode is None else mode
    H = problem.hamiltonian
    lam = batch.lam
    P = lam.shape[0]
    G, S = batch.R.shape[:2]
    key = jax.random.key(0) if key is None else key

    def one_time(g, t, R, dR):
        drive = H.drive(t, lam.dtype)
        V, div = field_terms(
            field, params, lam, drive, mode, jax.random.fold_in(key, g), problem.probes
        )
        m, dm = jax.vmap(lambda x, v: jax.jvp(moments, (x,), (v,)))(lam, V)
        m, dm = m.reshape(P, -1), dm.reshape(P, -1)
        R, dR = R.reshape(S, -1), dR.reshape(S, -1)
        w, dw, vg = R @ m.T, dR @ m.T, R @ dm.T
        r = dw[None] + w[None] * div[:, None, :] + vg[None]
        return r, dw

    return jax.vmap(one_time)(jnp.arange(G), batch.t, batch.R, batch.dR)


def loss(problem: Problem, field, params, batch: Batch, scale=1.0, key=None):
    """Mean of r_a r_b over the batch / scale: r^2 for the exact divergence, and an
    unbiased estimate of it from two independent Hutchinson estimates."""
    r, _ = residuals(problem, field, params, batch, key=key)
    return jnp.mean(r[:, 0] * r[:, -1]) / scale


def squared_residuals(problem: Problem, field, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """r(V)^2 and r(0)^2 on the held-out (states, points) grid, exact divergence.

    Two fields scored on one batch share the grid, so differences of their cells are paired.
    """
    r, dw = residuals(problem, field, params, batch, mode="exact")
    P = r.shape[-1]
    return (r[:, 0] ** 2).reshape(-1, P), (dw**2).reshape(-1, P)


def normalized_loss(problem: Problem, field, params, batch: Batch) -> dict[str, jax.Array]:
    """Held-out L(V) / L(0) with its standard error (states x points grid), exact divergence."""
    r2, d2 = squared_residuals(problem, field, params, batch)
    q, se = ratio_with_stderr(r2, d2)
    return {
        "normalized_loss": q,
        "normalized_loss_stderr": se,
        "loss": jnp.mean(r2),
        "loss_zero_field": jnp.mean(d2),
    }
