"""Loss landscapes of trained velocity fields (Li et al., 2018) and where the loss lives.

Everything here takes a scalar `loss_fn(params)` on a parameter pytree (for a field:
`normalized_loss_fn(problem, field, batch)`, L(V_theta) / L(0) on one fixed grid), or
the problem, field, parameters and a batch (for the breakdowns).

Directions (`filter_normalized_direction`)
    A Gaussian direction d ~ N(0, 1) of the shape of theta, rescaled filter by filter
    to the size of the parameters it moves (Li et al. 2018, "Visualizing the loss
    landscape of neural nets"): for each filter F

        d_F <- d_F |theta_F| / |d_F|.

    A filter of an array with two or more axes is one slice along its last axis (for a
    Dense kernel (in, out): one output unit's column of weights, for a convolution
    (..., in, out) likewise); a vector (a bias) or scalar is one filter as a whole.
    A filter with theta_F = 0 gets d_F = 0. The rescaling makes a step alpha d move
    every unit by the same fraction of its own weights, which removes the scale
    invariances that make raw slices of different networks incomparable.

Slices
    `slice_1d`: f(alpha) = L(theta + alpha d); `slice_2d`: f(alpha, beta) =
    L(theta + alpha d1 + beta d2); `interpolate`: f(t) = L((1 - t) theta_a + t theta_b),
    the straight line between two solutions (Goodfellow et al. 2015). For a quadratic
    L(theta) = 1/2 theta^T A theta + g^T theta + c the 1-D slice is the exact parabola
    L(theta) + alpha d^T (A theta + g) + alpha^2 / 2 d^T A d (a test).
    `barrier` is max_t [f(t) - ((1 - t) f(0) + t f(1))]: the height of the path above the
    chord; > 0 (beyond the noise) means the two solutions are separated by a barrier.
    `basin_width` is the extent of the alpha interval around the minimum of a 1-D slice
    where f stays within `tolerance` of its minimum.

Lines in function space (`function_space_interpolate`)
    The residual is affine in V, r(V) = dw/dt + w div V + V . grad w, so along the
    segment V_t = (1 - t) V_a + t V_b between two fields r(V_t) = (1 - t) r_a + t r_b
    exactly, and

        L(V_t) = (1 - t)^2 L_aa + 2 t (1 - t) L_ab + t^2 L_bb,    L_xy = E[r_x r_y],

    a convex parabola: in function space there is never a barrier, and
    E[(r_a - r_b)^2] = L_aa + L_bb - 2 L_ab measures how different the two solutions are
    as far as the continuity equation sees them. A barrier on the straight line in
    parameter space (`interpolate`) is then a property of the parametrisation (hidden
    units permuted between runs, for example), not of the physics.

Noise (`resampled_normalized_loss`)
    The loss of fixed parameters on `repeats` fresh grids of a given size, each
    normalised by its own L(0): the spread is the Monte Carlo noise of one such grid, the
    scale below which a training step of that size cannot tell two fields apart.

Curvature (`hessian_top_eigenvalues`)
    The Hessian H = d^2 L / d theta^2 enters only through Hessian-vector products,

        H v = d/de grad L(theta + e v) |_{e=0}        (forward-over-reverse: jax.jvp of
                                                       jax.grad, a few gradients' cost),

    and its extreme eigenvalues come from m Lanczos steps on the flattened parameters:
    q_1 random, beta_0 q_0 = 0,

        w = H q_j,  alpha_j = q_j . w,  w <- w - sum_{i<=j} (q_i . w) q_i (twice: full
        reorthogonalisation),  beta_j = |w|,  q_{j+1} = w / beta_j,

    and the eigenvalues of the tridiagonal T_m = tridiag(beta, alpha, beta) (Ritz values)
    approximate those of H, the extreme ones first. The residual of Ritz pair (theta_i,
    y_i = Q s_i) is |H y_i - theta_i y_i| = beta_m |s_i[m]|, reported as a convergence
    check. When beta_j vanishes (the Krylov space is invariant: H has fewer distinct
    eigenvalues than m) the next q is a fresh random vector orthogonal to the previous
    ones and beta_j = 0, which keeps T_m an exact projection of H.

Survey (`survey`)
    All of the above for one trained field on one fixed analysis grid, in the form the
    notebooks draw: two 1-D slices and a 2-D slice along filter-normalised directions,
    the straight line to a second solution in parameter and in function space, the top
    Hessian eigenvalues, the resampling noise of a training-size grid, the per-state and
    per-region breakdowns, and the function-space distance to a reference field (e.g. the
    least-squares floor's optimum).

Where the loss lives
    `loss_by_state`: per state rho of a batch, L_rho(V) = mean over points of r^2 and
    L_rho(0) = mean of (dw/dt)^2 (`residual.residuals` gives r and dw/dt, (G, S, P)). The
    pooled figure is a weighted mean of the per-state ratios,

        L(V) / L(0) = sum_rho L_rho(V) / sum_rho L_rho(0) = sum_rho w_rho L_rho(V) / L_rho(0),
        w_rho = L_rho(0) / sum_rho' L_rho'(0),

    (every state has the same points), while the per-state figure of
    `residual.normalized_loss` is the unweighted mean of the ratios.
    `loss_by_region`: the same split over the points, by bins of a coordinate c(lambda)
    in [-1, 1]: l1 . l2 or cos(theta_k) = l_k . z. Both are uniform on [-1, 1] for uniform
    points (Archimedes), so equal-width bins have equal measure, and
    L(V) = sum_bins (n_bin / P) L_bin(V).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lhvjax.residual import Batch, Problem, residuals, sample_batch

__all__ = [
    "tiny_overrides",
    "filter_normalized_direction",
    "random_directions",
    "normalized_loss_fn",
    "slice_1d",
    "slice_2d",
    "interpolate",
    "function_space_interpolate",
    "barrier",
    "basin_width",
    "hvp",
    "LanczosResult",
    "lanczos",
    "hessian_top_eigenvalues",
    "resampled_normalized_loss",
    "loss_by_state",
    "REGION_COORDINATES",
    "loss_by_region",
    "load_run",
    "Solution",
    "load_or_train",
    "cast",
    "survey",
]

LossFn = Callable[[Any], jax.Array]


# --- directions ---------------------------------------------------------------------------


def _normalize_leaf(d: jax.Array, p: jax.Array, eps: float) -> jax.Array:
    if p.ndim < 2:
        return d * (jnp.linalg.norm(p) / (jnp.linalg.norm(d) + eps))
    axes = tuple(range(p.ndim - 1))  # every axis but the last (the output unit)
    pn = jnp.sqrt(jnp.sum(p**2, axis=axes, keepdims=True))
    dn = jnp.sqrt(jnp.sum(d**2, axis=axes, keepdims=True))
    return d * (pn / (dn + eps))


def filter_normalized_direction(key, params: Any, eps: float = 1e-10) -> Any:
    """A Gaussian direction with every filter's norm set to that of the parameters' filter
    (module doc): per output unit for arrays of two or more axes, per whole leaf for
    vectors and scalars."""
    return _filter_normalized_direction(key, params, eps)


@jax.jit
def _filter_normalized_direction(key, params, eps):
    flat, unravel = ravel_pytree(params)
    d = unravel(jax.random.normal(key, flat.shape, flat.dtype))  # one draw: cheap to compile
    return jax.tree.map(lambda x, p: _normalize_leaf(x, p, eps), d, params)


def random_directions(key, params: Any, n: int = 2) -> list[Any]:
    """`n` independent filter-normalised directions."""
    return [filter_normalized_direction(k, params) for k in jax.random.split(key, n)]


def _axpy(params, *terms):
    """params + sum_i c_i d_i for terms (c_i, d_i)."""
    out = params
    for c, d in terms:
        out = jax.tree.map(lambda p, x, c=c: p + jnp.asarray(c, jnp.result_type(p)) * x, out, d)
    return out


def normalized_loss_fn(problem: Problem, field, batch: Batch, scale=None) -> LossFn:
    """params -> L(V_params) / L(0) on the fixed grid `batch` (L(0) of that grid unless
    `scale` is given): the loss that the landscape functions probe. dw/dt does not
    depend on the parameters, so the normalisation adds nothing to the derivatives."""

    def fn(params):
        r, dw = residuals(problem, field, params, batch)
        return jnp.mean(r**2) / (jnp.mean(dw**2) if scale is None else scale)

    return fn


# --- slices -------------------------------------------------------------------------------


def _map(fn, xs, batch_size: int | None):
    return jax.lax.map(fn, xs, batch_size=batch_size)


def slice_1d(
    loss_fn: LossFn, params: Any, direction: Any, alphas, batch_size: int | None = None
) -> jax.Array:
    """f(alpha) = loss_fn(params + alpha direction) for each alpha (lax.map; `batch_size`
    alphas are vmapped at once)."""
    alphas = jnp.asarray(alphas)
    return _map(lambda a: loss_fn(_axpy(params, (a, direction))), alphas, batch_size)


def slice_2d(
    loss_fn: LossFn,
    params: Any,
    d1: Any,
    d2: Any,
    alphas,
    betas,
    batch_size: int | None = None,
) -> jax.Array:
    """f[i, j] = loss_fn(params + alphas[i] d1 + betas[j] d2), shape (len(alphas), len(betas))."""
    alphas, betas = jnp.asarray(alphas), jnp.asarray(betas)
    A, B = jnp.meshgrid(alphas, betas, indexing="ij")
    ab = jnp.stack([A.ravel(), B.ravel()], axis=-1)
    f = _map(lambda x: loss_fn(_axpy(params, (x[0], d1), (x[1], d2))), ab, batch_size)
    return f.reshape(A.shape)


def interpolate(
    loss_fn: LossFn, params_a: Any, params_b: Any, ts, batch_size: int | None = None
) -> jax.Array:
    """f(t) = loss_fn((1 - t) params_a + t params_b): the straight line between two
    parameter sets (t outside [0, 1] extrapolates)."""
    delta = jax.tree.map(lambda a, b: b - a, params_a, params_b)
    return slice_1d(loss_fn, params_a, delta, ts, batch_size)


def function_space_interpolate(
    problem: Problem, field_a, params_a, field_b, params_b, batch: Batch, ts
) -> dict[str, jax.Array]:
    """L(V_t) / L(0) for V_t = (1 - t) V_a + t V_b on `batch` (module doc: exact, from
    the residuals of the two ends), with L_aa, L_bb, L_ab and the distance
    E[(r_a - r_b)^2], all divided by L(0) of the batch."""
    ra, dw = residuals(problem, field_a, params_a, batch)
    rb, _ = residuals(problem, field_b, params_b, batch)
    l0 = jnp.mean(dw**2)
    laa, lbb, lab = jnp.mean(ra * ra) / l0, jnp.mean(rb * rb) / l0, jnp.mean(ra * rb) / l0
    ts = jnp.asarray(ts, laa.dtype)
    line = (1 - ts) ** 2 * laa + 2 * ts * (1 - ts) * lab + ts**2 * lbb
    return {
        "t": ts,
        "normalized_loss": line,
        "L_aa": laa,
        "L_bb": lbb,
        "L_ab": lab,
        "distance": laa + lbb - 2 * lab,
    }


def resampled_normalized_loss(
    problem: Problem, field, params, key, repeats: int, groups: int, states: int, points: int
) -> jax.Array:
    """L(V) / L(0) of `params` on `repeats` independent fresh grids of groups x states x
    points (keys split from `key`), each normalised by its own L(0): (repeats,)."""

    @jax.jit
    def run(params, keys):
        def one(k):
            r, dw = residuals(
                problem, field, params, sample_batch(problem, k, groups, states, points)
            )
            return jnp.mean(r**2) / jnp.mean(dw**2)

        return jax.lax.map(one, keys)

    return run(params, jax.random.split(key, repeats))


def barrier(ts, losses) -> float:
    """max_t [f(t) - ((1 - t) f(0) + t f(1))] over the points with 0 <= t <= 1 (the
    values at t = 0 and t = 1 are read off `losses` where ts is 0 and 1)."""
    ts, f = np.asarray(ts, float), np.asarray(losses, float)
    i0, i1 = int(np.argmin(np.abs(ts))), int(np.argmin(np.abs(ts - 1)))
    if not (np.isclose(ts[i0], 0) and np.isclose(ts[i1], 1)):
        raise ValueError("ts must contain 0 and 1")
    inside = (ts >= 0) & (ts <= 1)
    chord = (1 - ts) * f[i0] + ts * f[i1]
    return float(np.max((f - chord)[inside]))


def basin_width(alphas, losses, tolerance: float) -> float:
    """Length of the connected alpha interval around argmin f where f <= min f + tolerance
    (linearly interpolated at its ends; the full range if it never leaves)."""
    a, f = np.asarray(alphas, float), np.asarray(losses, float)
    i = int(np.argmin(f))
    level = f[i] + tolerance

    def edge(step):
        j = i
        while 0 <= j + step < len(f) and f[j + step] <= level:
            j += step
        k = j + step
        if not 0 <= k < len(f):
            return a[j]
        # f[j] <= level < f[k]: linear crossing
        return a[j] + (a[k] - a[j]) * (level - f[j]) / (f[k] - f[j])

    return float(edge(1) - edge(-1))


# --- curvature ----------------------------------------------------------------------------


def hvp(loss_fn: LossFn, params: Any, v: Any) -> Any:
    """Hessian-vector product H v = jvp of grad (forward-over-reverse)."""
    return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


class LanczosResult(NamedTuple):
    eigenvalues: jax.Array  # (k,) Ritz values, descending
    eigenvectors: jax.Array  # (k, n) Ritz vectors (flattened parameters), unit norm
    residuals: jax.Array  # (k,) |H y - theta y| = beta_m |s[m]|
    ritz_values: jax.Array  # (m,) all Ritz values, descending (both ends of the spectrum)


def lanczos(matvec: Callable[[jax.Array], jax.Array], n: int, steps: int, key, dtype=None):
    """m = min(steps, n) Lanczos steps with full reorthogonalisation for a symmetric
    operator on R^n (module doc). Returns (T's diagonal alpha (m,), off-diagonal beta
    (m,) with beta[m-1] the residual norm of the last step, Q (m, n))."""
    dtype = dtype or jnp.zeros(()).dtype
    m = int(min(steps, n))
    k0, k1 = jax.random.split(key)
    q0 = jax.random.normal(k0, (n,), dtype)
    fresh = jax.random.normal(k1, (m, n), dtype)
    Q = jnp.zeros((m + 1, n), dtype).at[0].set(q0 / jnp.linalg.norm(q0))
    tol = 100 * jnp.finfo(dtype).eps

    def orth(Q, j, w):
        mask = (jnp.arange(m + 1) <= j).astype(dtype)[:, None]
        Qm = Q * mask
        for _ in range(2):
            w = w - Qm.T @ (Qm @ w)
        return w

    def body(j, carry):
        Q, alpha, beta = carry
        q = Q[j]
        w = matvec(q)
        a = q @ w
        scale = jnp.linalg.norm(w)
        w = orth(Q, j, w)
        b = jnp.linalg.norm(w)
        broke = b <= tol * jnp.maximum(scale, jnp.finfo(dtype).tiny)
        r = orth(Q, j, fresh[j])
        nxt = jnp.where(broke, r / jnp.linalg.norm(r), w / jnp.where(broke, 1.0, b))
        return Q.at[j + 1].set(nxt), alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b))

    Q, alpha, beta = jax.lax.fori_loop(
        0, m, body, (Q, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype))
    )
    return alpha, beta, Q[:m]


def hessian_top_eigenvalues(
    loss_fn: LossFn, params: Any, k: int = 5, steps: int | None = None, key=None
) -> LanczosResult:
    """The k largest eigenvalues of the Hessian of `loss_fn` at `params` by Lanczos with
    Hessian-vector products (module doc), `steps` = max(3k, 20) by default (at most the
    number of parameters). Compare `residuals` with the gaps between eigenvalues to judge
    convergence; `ritz_values` also carries the most negative ones."""
    flat, unravel = ravel_pytree(params)
    n = flat.size
    steps = min(steps or max(3 * k, 20), n)
    k = min(k, steps)
    key = jax.random.key(0) if key is None else key

    @jax.jit
    def run(flat, key):
        def matvec(v):
            return ravel_pytree(hvp(loss_fn, unravel(flat), unravel(v)))[0]

        alpha, beta, Q = lanczos(matvec, n, steps, key, flat.dtype)
        T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
        vals, S = jnp.linalg.eigh(T)
        vals, S = vals[::-1], S[:, ::-1]
        return vals, S, beta[-1], Q

    vals, S, b_last, Q = run(flat, key)
    vecs = S[:, :k].T @ Q
    return LanczosResult(vals[:k], vecs, jnp.abs(b_last * S[-1, :k]), vals)


# --- where the loss lives -----------------------------------------------------------------


def _per_state_descriptors(states) -> dict[str, jax.Array]:
    S = jnp.linalg.svd(states.T, compute_uv=False)  # (..., 3) descending
    return {
        "norm_a": jnp.linalg.norm(states.a, axis=-1),
        "norm_b": jnp.linalg.norm(states.b, axis=-1),
        "singular_values": S,
        "singular_gap": jnp.min(S[..., :-1] - S[..., 1:], axis=-1),
    }


def loss_by_state(problem: Problem, field, params, batch: Batch) -> dict[str, jax.Array]:
    """Per state of `batch` (flattened G * S): L_rho(V), L_rho(0), their ratio, the weight
    w_rho = L_rho(0) / sum L(0) with which the ratio enters the pooled L(V) / L(0), and
    the state's |a|, |b|, singular values of T and smallest gap between them (the svd
    gauge's dw/dt grows like 1 / gap). Also the pooled and per-state-mean figures."""
    r, dw = residuals(problem, field, params, batch)
    lv = jnp.mean(r**2, axis=-1).reshape(-1)
    l0 = jnp.mean(dw**2, axis=-1).reshape(-1)
    ratio = lv / l0
    weight = l0 / jnp.sum(l0)
    G, S = r.shape[:2]
    states = jax.tree.map(lambda x: x.reshape(G * S, *x.shape[2:]), batch.states)
    return {
        "loss": lv,
        "loss_zero_field": l0,
        "ratio": ratio,
        "weight": weight,
        "t": jnp.repeat(batch.t, S),
        "pooled": jnp.sum(lv) / jnp.sum(l0),
        "per_state_mean": jnp.mean(ratio),
        **_per_state_descriptors(states),
    }


def _l1_dot_l2(lam):
    return jnp.sum(lam[:, 0] * lam[:, 1], axis=-1)


REGION_COORDINATES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "l1.l2": _l1_dot_l2,
    "cos_theta1": lambda lam: lam[:, 0, 2],
    "cos_theta2": lambda lam: lam[:, 1, 2],
}


def loss_by_region(
    problem: Problem,
    field,
    params,
    batch: Batch,
    coordinate: str | Callable[[jax.Array], jax.Array] = "l1.l2",
    bins: int = 10,
) -> dict[str, jax.Array]:
    """L(V) and L(0) over the points of `batch` split into `bins` equal-width bins of a
    coordinate in [-1, 1] ("l1.l2", "cos_theta1", "cos_theta2" or a function of the points
    (P, N, 3) -> (P,)), averaged over every state. Returns the bin edges and centres, the
    number of points per bin, L_bin(V), L_bin(0), their ratio, and each bin's share of the
    pooled L(V) and of L(0)."""
    fn = REGION_COORDINATES[coordinate] if isinstance(coordinate, str) else coordinate
    r, dw = residuals(problem, field, params, batch)
    r2 = jnp.mean(r**2, axis=(0, 1))  # (P,)
    d2 = jnp.mean(dw**2, axis=(0, 1))
    c = fn(batch.lam)
    edges = jnp.linspace(-1.0, 1.0, bins + 1, dtype=r2.dtype)
    idx = jnp.clip(jnp.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
    seg = lambda x: jax.ops.segment_sum(x, idx, num_segments=bins)
    count = seg(jnp.ones_like(r2))
    sv, s0 = seg(r2), seg(d2)
    safe = jnp.maximum(count, 1)
    return {
        "edges": edges,
        "centers": 0.5 * (edges[1:] + edges[:-1]),
        "count": count,
        "loss": sv / safe,
        "loss_zero_field": s0 / safe,
        "ratio": sv / s0,
        "share_of_loss": sv / jnp.sum(sv),
        "share_of_loss_zero_field": s0 / jnp.sum(s0),
        "pooled": jnp.sum(sv) / jnp.sum(s0),
    }


# --- trained runs -------------------------------------------------------------------------


def load_run(run_dir: str | Path):
    """(config, problem, field, params) of a `lhvjax train` output directory, the params
    restored from its latest checkpoint in the run's precision (config.train.x64)."""
    import json

    from lhvjax import config as config_lib

    run_dir = Path(run_dir)
    cfg = config_lib.from_dict(json.loads((run_dir / "config.json").read_text()))
    with jax.enable_x64(cfg.train.x64):
        return (cfg, *_restore(cfg, run_dir))


class Solution(NamedTuple):
    cfg: Any
    problem: Problem
    field: Any
    params: Any
    summary: dict  # the run's summary.json (held-out figures)
    source: str  # where it came from


def tiny_overrides(small: bool = True) -> list[str]:
    """Config overrides for a quick stand-in run, used by the notebooks where a canonical
    run (experiments/run_all.py) is missing: 300 steps in the small setting, 1500 else."""
    return [
        "train.steps=300" if small else "train.steps=1500",
        "train.states=16",
        "train.points=128",
        "train.warmup=20",
        "train.eval_every=100000",
        "train.log_every=100",
        "field.width=32",
        "field.depth=2",
        "eval.states=32",
        "eval.points=256",
        "eval.times=2",
    ]


def load_or_train(
    experiments: str | Path, name: str, seed: int = 0, overrides: Sequence[str] = ()
) -> Solution:
    """The canonical run `name` with train.seed = `seed` as experiments/run_all.py writes
    it (experiments/runs/NAME/seed_S, restored by `load_run`) or, where that run is
    missing, a fresh run of experiments/NAME.toml with `overrides` (for example a tiny
    size), trained in memory. `source` says which."""
    import json

    from lhvjax import config as config_lib
    from lhvjax.train import train

    experiments = Path(experiments)
    run_dir = experiments / "runs" / name / f"seed_{seed}"
    if (run_dir / "summary.json").exists():
        cfg, problem, field, params = load_run(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        return Solution(cfg, problem, field, params, summary, f"checkpoint {run_dir}")
    cfg = config_lib.load(experiments / f"{name}.toml", [*overrides, f"train.seed={seed}"])
    result = train(cfg, None, progress=False)
    source = f"trained now ({cfg.train.steps} steps, width {cfg.field.width}, seed {seed})"
    problem, field = config_lib.build_problem(cfg), config_lib.build_field(cfg)
    return Solution(cfg, problem, field, result.params, result.summary, source)


def _restore(cfg, run_dir: Path):
    import orbax.checkpoint as ocp

    from lhvjax import config as config_lib
    from lhvjax.train import _feature_count, init_run, make_optimizer

    problem = config_lib.build_problem(cfg)
    field = config_lib.build_field(cfg)
    dtype = jnp.zeros(()).dtype
    optimizer = make_optimizer(cfg.train)
    params, opt_state, _ = init_run(
        field, optimizer, jax.random.key(0), _feature_count(problem), dtype, problem.gauge
    )
    manager = ocp.CheckpointManager((run_dir / "checkpoints").absolute())
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    target = {"step": jnp.asarray(0), "params": params, "opt_state": opt_state}
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return problem, field, restored["params"]


def cast(params: Any, dtype) -> Any:
    """Every floating leaf of `params` as `dtype` (e.g. a float32 run's parameters for a
    float64 analysis)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
    )


def survey(
    problem: Problem,
    field,
    params: Any,
    other: Any = None,
    *,
    key,
    groups: int = 1,
    states: int = 32,
    points: int = 256,
    alphas=None,
    grid: int = 9,
    ts=None,
    hessian_k: int = 5,
    hessian_steps: int = 30,
    noise_repeats: int = 16,
    noise_states: int = 32,
    noise_points: int = 256,
    reference: tuple[Any, Any] | None = None,
    region_bins: int = 10,
) -> dict[str, Any]:
    """The landscape of `field` at `params` on one analysis grid (module doc, "Survey").

    `other`: a second solution (another seed) for the lines; `reference`: (field, params)
    of a reference field for the function-space distance. `alphas` (default 13 points in
    [-0.3, 0.3]) for the two 1-D slices, a `grid` x `grid` 2-D slice over the same range,
    `ts` (default 13 points in [-0.25, 1.25]) for the lines (same length as `alphas`: the
    three 1-D curves then share one compiled program). The noise: `noise_repeats` fresh
    grids of 1 x noise_states x noise_points (a run's training batch). Returns host
    numbers (numpy arrays and floats); "loss" is L(V) / L(0) on the analysis grid.
    """
    alphas = np.linspace(-0.3, 0.3, 13) if alphas is None else np.asarray(alphas)
    ts = np.linspace(-0.25, 1.25, alphas.size) if ts is None else np.asarray(ts)
    k_batch, k_dir, k_hess, k_noise = jax.random.split(key, 4)
    batch = jax.jit(sample_batch, static_argnums=(0, 2, 3, 4))(
        problem, k_batch, groups, states, points
    )
    fn = normalized_loss_fn(problem, field, batch)
    out: dict[str, Any] = {}

    # residual-level quantities, in one program
    ref_field, ref_params = reference if reference is not None else (None, None)

    def analysis(p, q, rp):
        r, dw = residuals(problem, field, p, batch)
        l0 = jnp.mean(dw**2)
        res = {
            "by_state": loss_by_state(problem, field, p, batch),
            "by_region": loss_by_region(problem, field, p, batch, "l1.l2", region_bins),
        }
        if q is not None:
            rq, _ = residuals(problem, field, q, batch)
            res["seed"] = (jnp.mean(rq * rq) / l0, jnp.mean(r * rq) / l0)
        if ref_field is not None:
            rr, _ = residuals(problem, ref_field, rp, batch)
            res["reference"] = (jnp.mean(rr * rr) / l0, jnp.mean(r * rr) / l0)
        return res

    res = jax.tree.map(np.asarray, jax.jit(analysis)(params, other, ref_params))
    out["by_state"], out["by_region"] = res["by_state"], res["by_region"]
    laa = float(res["by_state"]["pooled"])
    out["loss"] = laa

    # slices and the parameter-space line: one compiled 1-D program, one 2-D
    line_fn = jax.jit(lambda p, d, a: slice_1d(fn, p, d, a))
    d1, d2 = random_directions(k_dir, params, 2)
    out["alphas"] = alphas
    out["slice_1d"] = np.stack([np.asarray(line_fn(params, d, alphas)) for d in (d1, d2)])
    g = np.linspace(alphas[0], alphas[-1], grid)
    out["grid"] = g
    out["slice_2d"] = np.asarray(slice_2d(fn, params, d1, d2, g, g))
    out["ts"] = ts
    if other is not None:
        delta = jax.tree.map(lambda a, b: b - a, params, other)
        out["line"] = np.asarray(line_fn(params, delta, ts))
        out["barrier"] = barrier(ts, out["line"])
        lbb, lab = (float(x) for x in res["seed"])
        out["function_line"] = (1 - ts) ** 2 * laa + 2 * ts * (1 - ts) * lab + ts**2 * lbb
        out["other_loss"] = lbb
        out["seed_distance"] = laa + lbb - 2 * lab
    if ref_field is not None:
        lrr, lar = (float(x) for x in res["reference"])
        out["reference_loss"] = lrr
        out["reference_distance"] = laa + lrr - 2 * lar

    res = hessian_top_eigenvalues(fn, params, hessian_k, hessian_steps, k_hess)
    out["hessian_top"] = np.asarray(res.eigenvalues)
    out["hessian_residuals"] = np.asarray(res.residuals)
    out["hessian_min_ritz"] = float(res.ritz_values[-1])
    flat = ravel_pytree(params)[0]
    out["n_params"] = int(flat.size)
    out["params_norm"] = float(jnp.linalg.norm(flat))

    noise = resampled_normalized_loss(
        problem, field, params, k_noise, noise_repeats, 1, noise_states, noise_points
    )
    out["noise_samples"] = np.asarray(noise)
    out["noise_std"] = float(np.std(noise, ddof=1))
    return out
