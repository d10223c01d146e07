"""Local velocity fields on (S^2)^N and a nonlocal baseline; training them on N qubits.

A field is local (the paper's local LHV dynamics) when V_j(lambda, t) depends only on
l_j and on the l_i of the qubits coupled to j by H(t). `LocalField` is local by
construction, a message-passing network

    V_j = P(l^_j) [ f_self(l^_j, h_j(t), t) + sum_i A_ij(t) f_msg(l^_j, l^_i, t) ],

with A(t) the coupling graph and h_j(t) the local field vector of `nqubits.Drive`: where
A_ij(t) = 0 the message is multiplied by an exact zero, so dV_j/dl_i = 0 to the bit.
`NonlocalField` adds one network of all N points (with `local_part=False`, it is only
that network: the plain baseline). Both see t and the drive (h, A) of H(t),
so a field can switch with the Hamiltonian; both hold the rotation h_j x l_j exactly in a
zero-initialised bilinear term, which is the exact field of a noninteracting H (Theorem 1).

Fields are flax modules called as field.apply(params, lam (N, 3), drive); the known
fields `zero_field` and `rotation_field` have the same `apply`. `train_field` is the
analysis entry point: one jitted optax step on fresh batches, held-out L(V)/L(0).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lhvjax import nqubits as nq
from lhvjax.fields import _MLP
from lhvjax.sphere import normalize, project

__all__ = [
    "LocalField",
    "NonlocalField",
    "KnownField",
    "zero_field",
    "rotation_field",
    "init_params",
    "make_train_step",
    "held_out",
    "train_field",
]


def _levi_civita() -> np.ndarray:
    eps = np.zeros((3, 3, 3))
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        eps[a, b, c], eps[a, c, b] = 1, -1
    return eps


class _Precession(nn.Module):
    """sum_bc B_abc h_b x_c: B = epsilon gives h x x; zero at initialisation."""

    @nn.compact
    def __call__(self, h, x):
        B = self.param("B", nn.initializers.zeros, (3, 3, 3), x.dtype)
        return jnp.einsum("abc,...b,...c->...a", B, h, x)


def _time(drive: nq.Drive, like: jax.Array) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(drive.t, like.dtype), (*like.shape[:-1], 1))


class LocalField(nn.Module):
    """V_j = P_j [f_self(l_j, h_j, t, j) + sum_{(j, i) in pairs} A_ij(t) f_msg(l_j, l_i, t, j, i)].

    `pairs` are the directed pairs (j, i) that may ever exchange messages (a static
    superset of the supports of A(t), e.g. `Hamiltonian.pairs`); the qubit identities
    enter as one-hot vectors, so different qubits may have different fields. A per-qubit
    linear map W_j l_j and the precession h_j x l_j are zero-initialised skip terms; all
    output layers start at zero, so training starts from V = 0.
    """

    n_spheres: int
    pairs: tuple[tuple[int, int], ...]
    width: int = 32
    depth: int = 2
    activation: str = "tanh"

    @nn.compact
    def __call__(self, lam: jax.Array, drive: nq.Drive) -> jax.Array:
        n = self.n_spheres
        x = normalize(lam)
        eye = jnp.eye(n, dtype=x.dtype)
        h = jnp.asarray(drive.h, x.dtype)
        inp = jnp.concatenate([x, h, _time(drive, x), eye], -1)  # (N, 3 + 3 + 1 + N)
        f = _MLP(self.width, self.depth, 3, self.activation, zero_output=True)(inp)
        W = self.param("W", nn.initializers.zeros, (n, 3, 3), x.dtype)
        f = f + jnp.einsum("nab,nb->na", W, x) + _Precession()(h, x)
        if self.pairs:
            j, i = (np.asarray(a) for a in zip(*self.pairs, strict=True))
            xj, xi = x[j], x[i]
            m_in = jnp.concatenate([xj, xi, _time(drive, xj), eye[j], eye[i]], -1)
            msg = _MLP(self.width, self.depth, 3, self.activation, zero_output=True)(m_in)
            # an exchange-like bilinear skip l_i x l_j (zero-initialised)
            msg = msg + _Precession(name="exchange")(xi, xj)
            weight = jnp.asarray(drive.A, x.dtype)[j, i]  # exact zero where uncoupled at t
            f = f.at[j].add(weight[:, None] * msg)
        return project(x, f)


class NonlocalField(nn.Module):
    """The nonlocal baseline: V = P (MLP(l^_1..l^_N, t, h, A) + W l^ + B(h, l^)) [+ local part].

    The MLP sees every point, so every V_j may depend on every l_i at all times. With
    `local_part=True` (the default) the field also contains a `LocalField` on the complete
    graph, so its class contains the local one and a lower floor than the local field's
    can only come from dependence that locality forbids. With `local_part=False` it is the
    plain one-network baseline (it has to learn by itself the nearly divergence-free
    structure that the residual favours, which is slow).
    """

    n_spheres: int
    width: int = 64
    depth: int = 2
    activation: str = "tanh"
    local_part: bool = True
    local_width: int = 32

    @nn.compact
    def __call__(self, lam: jax.Array, drive: nq.Drive) -> jax.Array:
        n = self.n_spheres
        x = normalize(lam)
        h = jnp.asarray(drive.h, x.dtype)
        A = jnp.asarray(drive.A, x.dtype)
        iu = np.triu_indices(n, 1)
        inp = jnp.concatenate(
            [x.reshape(-1), h.reshape(-1), A[iu], jnp.reshape(drive.t, (1,)).astype(x.dtype)]
        )
        f = _MLP(self.width, self.depth, 3 * n, self.activation, zero_output=True)(inp)
        skip = nn.Dense(3 * n, use_bias=False, kernel_init=nn.initializers.zeros)(x.reshape(-1))
        f = (f + skip).reshape(n, 3) + _Precession()(h, x)
        V = project(x, f)
        if self.local_part:
            pairs = tuple((j, i) for j in range(n) for i in range(n) if i != j)
            V = V + LocalField(n, pairs, self.local_width, self.depth, self.activation)(lam, drive)
        return V


class KnownField:
    """A parameter-free field lam (N, 3), drive -> (N, 3) with the flax-style `apply`."""

    def __init__(self, fn, name: str):
        self.fn = fn
        self.name = name

    def apply(self, params, lam, drive):
        return self.fn(lam, drive)

    def init(self, key, lam, drive):
        return {}


def zero_field() -> KnownField:
    return KnownField(lambda lam, drive: jnp.zeros_like(lam), "zero")


def rotation_field() -> KnownField:
    """V_j = h_j(t) x l_j: the exact field of a noninteracting H(t) = sum_j (omega_j(t)/2)
    n_j.sigma_j, under which each Bloch index rotates as r' = omega n x r."""

    def fn(lam, drive):
        x = normalize(lam)
        return jnp.cross(jnp.asarray(drive.h, x.dtype), x)

    return KnownField(fn, "rotation")


def init_params(field, key, n: int, dtype=jnp.float32) -> Any:
    """Initial parameters in `dtype` (flax creates float32; a float64 run trains in float64)."""
    lam = jnp.zeros((n, 3), dtype).at[:, 2].set(1)
    drive = nq.Drive(jnp.zeros((), dtype), jnp.zeros((n, 3), dtype), jnp.zeros((n, n), dtype))
    params = field.init(key, lam, drive)
    return jax.tree.map(lambda x: x.astype(dtype), params)


# --- training --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def make_train_step(problem, field, optimizer, times: int, states: int, points: int):
    """The jitted step (params, opt_state, i, key, scale) -> (params, opt_state, loss / scale)
    on the fresh batch of jax.random.fold_in(key, i). Cached, so seeds share one compilation
    (the problem hashes by identity, flax modules and optax optimisers by value or identity).
    """
    import optax

    @jax.jit
    def step(params, opt_state, i, key, scale):
        kb, kd = jax.random.split(jax.random.fold_in(key, i))
        batch = nq.sample_batch(problem, kb, times, states, points)

        def f(p):
            return nq.loss(problem, field, p, batch, scale, key=kd)

        value, grads = jax.value_and_grad(f)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


@functools.lru_cache(maxsize=32)
def _evaluator(problem, field):
    return jax.jit(lambda p, b: nq.normalized_loss(problem, field, p, b))


@functools.lru_cache(maxsize=32)
def _optimizer(steps: int, lr: float, warmup: int):
    from lhvjax.config import TrainConfig
    from lhvjax.train import make_optimizer

    return make_optimizer(TrainConfig(steps=steps, lr=lr, warmup=warmup))


def held_out(problem, key, times: int = 8, states: int = 64, points: int = 1024, dtype=None):
    """A held-out batch; draw it from a key that no training step uses."""
    dtype = dtype or jnp.zeros(()).dtype
    return _sample(problem, times, states, points, dtype)(key)


@functools.lru_cache(maxsize=32)
def _sample(problem, times, states, points, dtype):
    # jitted: drawn eagerly, the evolution would pay a dispatch per small op
    return jax.jit(lambda key: nq.sample_batch(problem, key, times, states, points, dtype))


def train_field(
    problem,
    field,
    *,
    seed: int = 0,
    steps: int = 500,
    times: int = 4,
    states: int = 16,
    points: int = 128,
    lr: float = 3e-3,
    warmup: int = 50,
    eval_batch=None,
    eval_every: int = 0,
    log_every: int = 25,
    progress: bool = False,
    name: str = "",
) -> dict:
    """Train `field` on `problem` with Adam (warmup + cosine, clipping: train.make_optimizer).

    Batches come from fold_in(key(seed) split, step); `eval_batch` (default: `held_out`
    with key(1_000_003)) normalises the loss by its L(0) and gives the reported
    L(V)/L(0) and standard error. Returns {"params", "history", "final", "wall_time_s"}.
    """
    t0 = time.perf_counter()
    dtype = jnp.zeros(()).dtype
    k_init, k_data = jax.random.split(jax.random.key(seed))
    params = init_params(field, k_init, problem.n, dtype)
    optimizer = _optimizer(steps, lr, warmup)
    opt_state = optimizer.init(params)
    if eval_batch is None:
        eval_batch = held_out(problem, jax.random.key(1_000_003), dtype=dtype)
    evaluate = _evaluator(problem, field)
    scale = evaluate(params, eval_batch)["loss_zero_field"]
    step = make_train_step(problem, field, optimizer, times, states, points)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=name or "train", unit="step", dynamic_ncols=True)
    history, chunk = [], []
    try:
        for i in range(steps):
            params, opt_state, value = step(params, opt_state, i, k_data, scale)
            chunk.append(value)
            done = i + 1
            if done % log_every and done != steps:
                continue
            vals = np.asarray(jnp.stack(chunk))
            chunk = []
            if not np.all(np.isfinite(vals)):
                raise FloatingPointError(
                    f"{name or 'training'}: the loss became non-finite before step {done} "
                    f"(last values {vals[-3:]}); lower lr or train in float64."
                )
            row = {"step": done, "train_loss": float(vals.mean())}
            if eval_every and (done % eval_every == 0 or done == steps):
                e = evaluate(params, eval_batch)
                row["eval_normalized_loss"] = float(e["normalized_loss"])
                row["eval_normalized_loss_stderr"] = float(e["normalized_loss_stderr"])
            history.append(row)
            if bar is not None:
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{row['train_loss']:.4g}")
    finally:
        if bar is not None:
            bar.close()
    final = {k: float(v) for k, v in evaluate(params, eval_batch).items()}
    return {
        "params": params,
        "history": history,
        "final": final,
        "wall_time_s": time.perf_counter() - t0,
    }
