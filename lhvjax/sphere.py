"""Geometry on products of spheres (S^2)^N.

A point is an array (..., N, 3) of unit vectors; a tangent field is a function
x (N, 3) -> v (N, 3) with v_k . x_k = 0. The surface operators are taken from any
smooth ambient extension:

    grad f = P (nabla f),       div V = sum_k tr(P_k J_kk),       P_k = 1 - x_k x_k^T,

where J_kk is the ambient Jacobian of V_k in x_k. Both use only derivatives along the
sphere, so the result does not depend on how f or V extend off it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "uniform",
    "sobol",
    "normalize",
    "project",
    "tangent",
    "surface_grad",
    "surface_div",
    "value_and_div",
    "hutchinson_div",
    "area",
]


def area(n_spheres: int) -> float:
    """Area of (S^2)^N, (4 pi)^N: uniform density is 1 / area."""
    return (4 * math.pi) ** n_spheres


def normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def uniform(key, n: int, n_spheres: int = 2, dtype=None) -> jax.Array:
    """n points uniform on (S^2)^N, shape (n, N, 3) (normalised Gaussians)."""
    dtype = dtype or jnp.zeros(()).dtype
    return normalize(jax.random.normal(key, (n, n_spheres, 3), dtype))


def sobol(n: int, n_spheres: int = 2, seed: int = 0, dtype=None) -> jax.Array:
    """n scrambled-Sobol points on (S^2)^N, shape (n, N, 3).

    Each sphere uses two Sobol coordinates (u, w) through the area-preserving map
    z = 1 - 2u, phi = 2 pi w, so the points are low-discrepancy for the uniform measure.
    Host-side (scipy); use it for fixed evaluation sets and basis fits, not inside jit.
    """
    from scipy.stats import qmc

    if n <= 0:
        raise ValueError(f"need n > 0 points; got {n}")
    m = math.ceil(math.log2(n))
    u = qmc.Sobol(d=2 * n_spheres, scramble=True, seed=seed).random_base2(m)[:n]
    u = u.reshape(n, n_spheres, 2)
    z = 1 - 2 * u[..., 0]
    phi = 2 * np.pi * u[..., 1]
    s = np.sqrt(np.clip(1 - z**2, 0, None))
    x = np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=-1)
    return jnp.asarray(x, dtype=dtype or jnp.zeros(()).dtype)


def project(x: jax.Array, v: jax.Array) -> jax.Array:
    """P(x) v = v - x (x . v): the part of v tangent to the sphere at unit x."""
    return v - x * jnp.sum(x * v, axis=-1, keepdims=True)


def tangent(f):
    """Turn an ambient map f: (N, 3) -> (N, 3) into the tangent field x -> P(x^) f(x^).

    x^ = x / |x| per sphere, so the field is constant along rays and its ambient
    Jacobian trace equals its surface divergence (DESIGN section 7).
    """

    def field(x, *args, **kwargs):
        xh = normalize(x)
        return project(xh, f(xh, *args, **kwargs))

    return field


def surface_grad(f, x: jax.Array, *args) -> jax.Array:
    """Surface gradient P nabla f of a scalar f(x (N, 3), *args) at x, shape (N, 3)."""
    return project(x, jax.grad(f)(x, *args))


def _check_points(x):
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"a point of (S^2)^N is an (N, 3) array; got shape {x.shape}")


def surface_div(V, x: jax.Array, *args) -> jax.Array:
    """Exact surface divergence sum_k tr(P_k J_kk) of a tangent field V(x, *args) at x (N, 3)."""
    _check_points(x)
    J = jax.jacfwd(V)(x, *args)  # (N, 3, N, 3)
    Jkk = jnp.diagonal(J, axis1=0, axis2=2)  # (3, 3, N)
    P = jnp.eye(3, dtype=x.dtype) - x[:, :, None] * x[:, None, :]  # (N, 3, 3)
    return jnp.einsum("kij,jik->", P, Jkk)


def value_and_div(V, x: jax.Array, *args) -> tuple[jax.Array, jax.Array]:
    """V(x) and its surface divergence from one forward-mode Jacobian."""
    _check_points(x)

    def with_aux(y):
        v = V(y, *args)
        return v, v

    J, v = jax.jacfwd(with_aux, has_aux=True)(x)
    Jkk = jnp.diagonal(J, axis1=0, axis2=2)
    P = jnp.eye(3, dtype=x.dtype) - x[:, :, None] * x[:, None, :]
    return v, jnp.einsum("kij,jik->", P, Jkk)


def hutchinson_div(V, x: jax.Array, key, probes: int = 1, *args) -> jax.Array:
    """Unbiased estimate of the surface divergence from `probes` Jacobian-vector products.

    With z = P eps, eps ~ N(0, 1): E[z . J z] = tr(P J P) = sum_k tr(P_k J_kk). Costs one
    JVP per probe instead of 3N, which is what makes many particles affordable.
    """
    _check_points(x)
    eps = jax.random.normal(key, (probes, *x.shape), x.dtype)
    z = project(x, eps)

    def one(zi):
        _, jz = jax.jvp(lambda y: V(y, *args), (x,), (zi,))
        return jnp.sum(zi * jz)

    return jnp.mean(jax.vmap(one)(z))
