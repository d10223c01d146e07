"""Velocity fields on (S^2)^N.

Every field is tangent by construction: the network gives an ambient vector f_k per
sphere and the field is V_k = P(l^_k) f_k with l^_k = l_k / |l_k| (DESIGN section 7).

* `MLPField`: V(lambda) or, with `time=True`, V(lambda, t). The ambient output is a
  linear map of the embedded point plus an MLP; the linear part holds every rigid
  rotation l_k -> A_k l_k exactly, the MLP everything else.
* `DeepONetField`: the state-dependent control V(lambda, rho) = sum_k b_k(rho) t_k(lambda),
  a branch network of state features giving K coefficients and a trunk network of
  lambda giving K tangent fields, so div V = sum_k b_k div t_k costs one trunk pass per
  point whatever the number of states (DESIGN section 6).
* `zero_field` and `rotation_field`: the known fields.

`evaluate(field, params, lam, t, features)` returns V and div V on a batch of points,
with a leading state axis of size 1 for state-independent fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lhvjax.sphere import normalize, project, value_and_div

__all__ = [
    "ACTIVATIONS",
    "MLPField",
    "DeepONetField",
    "KnownField",
    "zero_field",
    "rotation_field",
    "evaluate",
    "values",
    "init_params",
]

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "softplus": nn.softplus,
    "sin": jnp.sin,
}


def _activation(name: str) -> Callable:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; the residual differentiates the field, so use a "
            f"smooth one: {', '.join(ACTIVATIONS)}"
        ) from None


class _MLP(nn.Module):
    width: int
    depth: int
    out: int
    activation: str = "tanh"
    zero_output: bool = False

    @nn.compact
    def __call__(self, h):
        act = _activation(self.activation)
        # random biases: with zero biases an odd activation (tanh, sin) makes the whole
        # network odd in lambda, and it could never learn an even field such as the
        # exchange precession V_1 = l2 x l1
        bias = nn.initializers.uniform(2.0)
        for _ in range(self.depth):
            h = act(nn.Dense(self.width, bias_init=lambda k, s, d=None: bias(k, s, d) - 1.0)(h))
        init = nn.initializers.zeros if self.zero_output else nn.initializers.lecun_normal()
        return nn.Dense(self.out, kernel_init=init)(h)


class MLPField(nn.Module):
    """V(lambda[, t]) on (S^2)^N: P(l^) (W l^ + MLP(l^[, t]))."""

    width: int = 64
    depth: int = 3
    activation: str = "tanh"
    n_spheres: int = 2
    time: bool = False
    linear_skip: bool = True

    @nn.compact
    def __call__(self, lam: jax.Array, t: jax.Array | None = None) -> jax.Array:
        x = normalize(lam)
        h = x.reshape(-1)
        if self.time:
            h = jnp.concatenate([h, jnp.reshape(t, (1,)).astype(h.dtype)])
        n = 3 * self.n_spheres
        # start from V = 0, the field whose loss defines the normalisation
        f = _MLP(self.width, self.depth, n, self.activation, zero_output=True)(h)
        if self.linear_skip:
            f = f + nn.Dense(n, use_bias=False, kernel_init=nn.initializers.zeros)(x.reshape(-1))
        return project(x, f.reshape(self.n_spheres, 3))


class DeepONetField(nn.Module):
    """V(lambda, rho) = sum_k b_k(features(rho)) t_k(lambda)."""

    width: int = 64
    depth: int = 3
    modes: int = 32
    activation: str = "tanh"
    n_spheres: int = 2

    def setup(self):
        n = 3 * self.n_spheres
        self.trunk_net = _MLP(self.width, self.depth, self.modes * n, self.activation)
        self.trunk_linear = nn.Dense(self.modes * n, use_bias=False)
        self.branch_net = _MLP(self.width, self.depth, self.modes, self.activation)
        self.branch_linear = nn.Dense(self.modes, use_bias=False)

    def trunk(self, lam: jax.Array) -> jax.Array:
        """K tangent fields at one point: (K, N, 3)."""
        x = normalize(lam)
        h = x.reshape(-1)
        f = self.trunk_net(h) + self.trunk_linear(h)
        f = f.reshape(self.modes, self.n_spheres, 3)
        return project(x[None], f)

    def branch(self, features: jax.Array) -> jax.Array:
        """K coefficients for one state's features."""
        return self.branch_net(features) + self.branch_linear(features)

    def __call__(self, lam: jax.Array, features: jax.Array) -> jax.Array:
        return jnp.einsum("k,kni->ni", self.branch(features), self.trunk(lam))


class KnownField:
    """A parameter-free field given as a function lam (N, 3) -> (N, 3)."""

    def __init__(self, fn: Callable[[jax.Array], jax.Array], name: str):
        self.fn = fn
        self.name = name

    def __call__(self, lam, t=None):
        return self.fn(lam)


def zero_field(n_spheres: int = 2) -> KnownField:
    return KnownField(lambda lam: jnp.zeros_like(lam), "zero")


def rotation_field(omega1: float, n1, omega2: float, n2) -> KnownField:
    """V_k = omega_k n_k x l_k: the exact field of the noninteracting Hamiltonian
    H = 1/2 (omega1 n1.sigma x 1 + omega2 1 x n2.sigma), under which a' = omega1 n1 x a
    (Theorem 1). Its continuity residual vanishes in every covariant gauge."""
    w = np.stack(
        [
            omega1 * np.asarray(n1, float) / np.linalg.norm(n1),
            omega2 * np.asarray(n2, float) / np.linalg.norm(n2),
        ]
    )

    def fn(lam):
        return jnp.cross(jnp.asarray(w, lam.dtype), normalize(lam))

    return KnownField(fn, "rotation")


def init_params(field, key, n_spheres: int = 2, n_features: int = 0, dtype=jnp.float32) -> Any:
    """Initial parameters (an empty dict for known fields)."""
    lam = jnp.zeros((n_spheres, 3), dtype).at[:, 2].set(1)
    if isinstance(field, KnownField):
        return {}
    if isinstance(field, DeepONetField):
        params = field.init(key, lam, jnp.zeros((n_features,), dtype))
    else:
        params = field.init(key, lam, jnp.zeros((), dtype))
    # flax keeps parameters in float32 by default; a float64 run must train in float64
    return jax.tree.map(lambda x: x.astype(dtype), params)


def evaluate(field, params, lam: jax.Array, t=None, features=None):
    """V (S', P, N, 3) and div V (S', P) at points lam (P, N, 3).

    S' = 1 for state-independent fields (they do not see the state), and the number of
    rows of `features` (S, F) for `DeepONetField`, which evaluates its trunk once per point.
    """
    if lam.ndim != 3 or lam.shape[-1] != 3:
        raise ValueError(f"points must have shape (P, N, 3); got {lam.shape}")
    if isinstance(field, DeepONetField):
        if features is None:
            raise ValueError("a state-dependent field needs the states' features")

        def trunk(x):
            return field.apply(params, x, method=DeepONetField.trunk)

        def trunk_and_div(x):
            vals = trunk(x)
            J = jax.jacfwd(trunk)(x)  # (K, N, 3, N, 3)
            Jkk = jnp.diagonal(J, axis1=1, axis2=3)  # (K, 3, 3, N)
            P = jnp.eye(3, dtype=x.dtype) - x[:, :, None] * x[:, None, :]
            return vals, jnp.einsum("nij,kjin->k", P, Jkk)

        tk, divk = jax.vmap(trunk_and_div)(lam)  # (P, K, N, 3), (P, K)
        b = jax.vmap(lambda f: field.apply(params, f, method=DeepONetField.branch))(features)
        return jnp.einsum("sk,pkni->spni", b, tk), jnp.einsum("sk,pk->sp", b, divk)

    if isinstance(field, KnownField):
        fn = field
    else:

        def fn(x, t):
            return field.apply(params, x, t)

    V, div = jax.vmap(lambda x: value_and_div(lambda y: fn(y, t), x))(lam)
    return V[None], div[None]


def values(field, params, lam: jax.Array, t=None, features=None) -> jax.Array:
    """V (S', P, N, 3) at points lam (P, N, 3), without the divergence (see `evaluate`)."""
    if lam.ndim != 3 or lam.shape[-1] != 3:
        raise ValueError(f"points must have shape (P, N, 3); got {lam.shape}")
    if isinstance(field, DeepONetField):
        if features is None:
            raise ValueError("a state-dependent field needs the states' features")
        tk = jax.vmap(lambda x: field.apply(params, x, method=DeepONetField.trunk))(lam)
        b = jax.vmap(lambda f: field.apply(params, f, method=DeepONetField.branch))(features)
        return jnp.einsum("sk,pkni->spni", b, tk)
    if isinstance(field, KnownField):
        return jax.vmap(lambda x: field(x, t))(lam)[None]
    return jax.vmap(lambda x: field.apply(params, x, t))(lam)[None]
