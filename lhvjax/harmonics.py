"""Real spherical harmonics on S^2 x S^2 as test functions and moments (DESIGN section 3).

Harmonics are e3nn-jax's real ones with integral normalisation, int_{S^2} Y_A Y_B = delta_AB,
ordered by degree l = 0..L and within a degree by e3nn's index m = -l..l; index A has degree
`degrees(L)[A]`. A test function on the two spheres is a product Y_A(l1) Y_B(l2).

What the Bell statistics see. By Funk-Hecke, sign(n . lambda) = sum_l c_l P_l(n . lambda)
with c_l = P_{l-1}(0) - P_{l+1}(0), nonzero exactly for odd l (`sign_coefficients`), and
P_l(n . lambda) = 4 pi / (2l + 1) sum_m Y_lm(n) Y_lm(lambda) (addition theorem). So the
statistics of p depend only on its moments E_p[Y_A(l1) Y_B(l2)] with each degree odd or 0
(`pairs(L, "odd")`); a moment with an even degree >= 2 on either sphere is invisible
(`pairs(L, "free")`): that freedom is the gauge.
"""

from __future__ import annotations

import functools
import math

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import eval_legendre

from lhvjax.sphere import project

__all__ = [
    "PAIR_SETS",
    "degrees",
    "sh",
    "sh_and_grad",
    "pairs",
    "sign_coefficients",
    "ramp_coefficients",
    "quadrature",
    "linear_moment_matrix",
    "linear_moments",
    "sign_from_moments",
]

PAIR_SETS = ("full", "odd", "free")


def degrees(L: int) -> np.ndarray:
    """Degree l of each of the (L + 1)^2 harmonics up to degree L."""
    return np.concatenate([np.full(2 * l + 1, l) for l in range(L + 1)])


def sh(x: jax.Array, L: int) -> jax.Array:
    """Y_A(x) for all harmonics of degree <= L at unit vectors x (..., 3): (..., (L+1)^2)."""
    return e3nn.sh(list(range(L + 1)), x, normalize=True, normalization="integral")


def sh_and_grad(x: jax.Array, L: int) -> tuple[jax.Array, jax.Array]:
    """Y (K,) and the surface gradients (K, 3) at one unit vector x (3,)."""
    f = lambda y: sh(y, L)
    return f(x), project(x, jax.jacfwd(f)(x))


@functools.cache
def pairs(L: int, kind: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (A, B) of the products Y_A(l1) Y_B(l2), both degrees <= L.

    "full": every product but the constant; "odd": each degree odd or 0, not both 0 (the
    moments the Bell statistics see); "free": an even degree >= 2 on at least one sphere
    (the moments no statistic sees). "odd" and "free" split "full".
    """
    if kind not in PAIR_SETS:
        raise ValueError(f"unknown set of test functions {kind!r}; choose one of {PAIR_SETS}")
    if L < 1:
        raise ValueError(f"the test-function degree must be at least 1; got {L}")
    deg = degrees(L)
    A, B = (g.ravel() for g in np.meshgrid(np.arange(deg.size), np.arange(deg.size), indexing="ij"))
    visible = lambda l: (l % 2 == 1) | (l == 0)
    keep = {
        "full": (deg[A] > 0) | (deg[B] > 0),
        "odd": visible(deg[A]) & visible(deg[B]) & ((deg[A] > 0) | (deg[B] > 0)),
        "free": ~(visible(deg[A]) & visible(deg[B])),
    }[kind]
    # int32: numpy's default int64 indices break jnp indexing under jax.enable_x64(False)
    return A[keep].astype(np.int32), B[keep].astype(np.int32)


def sign_coefficients(L: int) -> np.ndarray:
    """c_l (l = 0..L) of sign(x) = sum_l c_l P_l(x) on [-1, 1]: P_{l-1}(0) - P_{l+1}(0) (odd l)."""
    l = np.arange(L + 1)
    c = eval_legendre(l - 1, 0.0) - eval_legendre(l + 1, 0.0)
    return np.where(l % 2 == 1, c, 0.0)


@functools.cache
def ramp_coefficients(L: int) -> np.ndarray:
    """r_l (l = 0..L) with E_u[R(n . x) Y_A(x)] = r_l(A) Y_A(n), R(x) = max(x, 0).

    Funk-Hecke: r_l = 1/2 int_0^1 x P_l(x) dx (1/4, 1/6, 1/16, 0, -1/96, ...: odd l >= 3
    vanish, since R(x) = x/2 + |x|/2). Gauss-Legendre on [0, 1], exact for these degrees.
    """
    z, wz = np.polynomial.legendre.leggauss(L // 2 + 2)
    x = (z + 1) / 2
    return np.array([np.sum(wz / 2 * x * eval_legendre(l, x)) / 2 for l in range(L + 1)])


@functools.cache
def quadrature(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (M, 3) and weights (M,) summing to 1 for the uniform mean on S^2.

    Gauss-Legendre in z (n nodes) times 2n equally spaced azimuths: exact for polynomials
    of degree <= 2n - 1 (so for products of harmonics of total degree below 2n).
    """
    z, wz = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * (np.arange(2 * n) + 0.5) / (2 * n)
    s = np.sqrt(1 - z**2)
    x = np.stack(
        [np.outer(s, np.cos(phi)), np.outer(s, np.sin(phi)), np.repeat(z[:, None], 2 * n, 1)], -1
    ).reshape(-1, 3)
    w = np.repeat(wz[:, None] / 2, 2 * n, 1).reshape(-1) / (2 * n)
    return x, w


@functools.cache
def _moment_constants(L: int) -> tuple[np.ndarray, np.ndarray]:
    # y0_A = E_u[Y_A], c_A = E_u[lambda Y_A]: nonzero only for degrees 0 and 1
    # host constants, also when first needed inside a jitted function
    with jax.enable_x64(True), jax.ensure_compile_time_eval():
        x, w = quadrature(L + 2)
        Y = np.asarray(sh(jnp.asarray(x), L))
    return w @ Y, np.einsum("p,pi,pa->ia", w, x, Y)


def linear_moment_matrix(state, L: int) -> jax.Array:
    """E_p[Y_A(l1) Y_B(l2)] (..., K, K) for the linear-gauge density of `state`.

    (4 pi)^2 p = 1 + 2 a.l1 + 2 b.l2 + 4 l1^T T l2 has degree 1 in each party, so only
    degrees <= 1 contribute. Works for one state or a batch (leading axes of the leaves).
    """
    y0, c = (jnp.asarray(v, state.a.dtype) for v in _moment_constants(L))
    ca = jnp.einsum("...i,ia->...a", state.a, c)
    cb = jnp.einsum("...i,ia->...a", state.b, c)
    cT = jnp.einsum("ia,...ij,jb->...ab", c, state.T, c)
    return (
        y0[:, None] * y0[None, :]
        + 2 * ca[..., :, None] * y0[None, :]
        + 2 * y0[:, None] * cb[..., None, :]
        + 4 * cT
    )


def linear_moments(state, L: int, kind: str = "odd") -> jax.Array:
    """`linear_moment_matrix` over `pairs(L, kind)`, (..., M).

    For kind = "odd" the numbers are the same for every valid gauge (the statistics fix
    them): they are the quantum targets of the odd moments.
    """
    A, B = pairs(L, kind)
    return linear_moment_matrix(state, L)[..., A, B]


def sign_from_moments(
    moments: jax.Array, L: int, n1: jax.Array | None, n2: jax.Array | None
) -> jax.Array:
    """A Bell statistic from the odd moments (`pairs(L, "odd")`, last axis) by Funk-Hecke.

    n2 = None: E[sign(n1 . l1)]; n1 = None: E[sign(n2 . l2)]; both: the joint statistic.
    Truncated at degree L; exact for a density of degree <= L in each party.
    """
    deg = degrees(L)
    k = jnp.asarray(sign_coefficients(L)[deg] * 4 * math.pi / (2 * deg + 1), moments.dtype)
    e0 = jnp.zeros((deg.size,), moments.dtype).at[0].set(math.sqrt(4 * math.pi))
    # a party without a measurement contributes 1 = sqrt(4 pi) Y_00
    f1 = e0 if n1 is None else k * sh(n1, L)
    f2 = e0 if n2 is None else k * sh(n2, L)
    A, B = pairs(L, "odd")
    return jnp.einsum("...m,...m->...", moments, f1[..., A] * f2[..., B])
