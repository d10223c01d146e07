"""Drawing densities and velocity fields on the spheres (notebook 03).

A point of S^2 at longitude phi in (-pi, pi] and latitude delta in [-pi/2, pi/2] is
x = (cos delta cos phi, cos delta sin phi, sin delta); the local east and north unit
vectors are e = (-sin phi, cos phi, 0) and n = (-sin delta cos phi, -sin delta sin phi,
cos delta), an orthonormal frame of the tangent plane (away from the poles). A tangent
vector v is drawn by its components (v . e, v . n).

On S^2 x S^2 a function of (l1, l2) is drawn as a map of l1 with l2 held fixed (a
slice), or of l1 averaged over l2 (a marginal, by Monte Carlo over uniform l2).
Matplotlib's "mollweide" axes take longitude and latitude in radians; arrows there are
drawn with `angles="xy"` on (d phi, d delta) = (v . e / cos delta, v . n) so that they
point along the field after the map's distortion.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lhvjax.fields import evaluate
from lhvjax.sphere import uniform

__all__ = [
    "Grid",
    "lonlat_grid",
    "east_north",
    "function_slice",
    "density_slice",
    "density_marginal",
    "density_rate_slice",
    "field_slice",
    "mollweide",
    "quiver",
    "invariant_components",
]


class Grid(NamedTuple):
    lon: np.ndarray  # (n_lat, n_lon) radians
    lat: np.ndarray  # (n_lat, n_lon) radians
    x: np.ndarray  # (n_lat, n_lon, 3) unit vectors


def lonlat_grid(n_lon: int = 72, n_lat: int = 36, margin: float = 0.0) -> Grid:
    """Cell centres of a regular longitude-latitude grid (`margin` radians kept off the
    poles and the date line, e.g. for arrows)."""
    lon = np.linspace(-np.pi + margin, np.pi - margin, n_lon + 1)
    lat = np.linspace(-np.pi / 2 + margin, np.pi / 2 - margin, n_lat + 1)
    lon, lat = 0.5 * (lon[1:] + lon[:-1]), 0.5 * (lat[1:] + lat[:-1])
    LON, LAT = np.meshgrid(lon, lat)
    x = np.stack([np.cos(LAT) * np.cos(LON), np.cos(LAT) * np.sin(LON), np.sin(LAT)], axis=-1)
    return Grid(LON, LAT, x)


def east_north(x, v):
    """(v . e, v . n) at unit vectors x (..., 3) (module doc)."""
    x, v = np.asarray(x), np.asarray(v)
    phi = np.arctan2(x[..., 1], x[..., 0])
    delta = np.arcsin(np.clip(x[..., 2], -1, 1))
    e = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], -1)
    n = np.stack([-np.sin(delta) * np.cos(phi), -np.sin(delta) * np.sin(phi), np.cos(delta)], -1)
    return np.sum(v * e, -1), np.sum(v * n, -1)


def _pairs(x1, l_fixed, sphere: int):
    """Points (M, 2, 3): x1 on `sphere`, l_fixed on the other one."""
    x1 = jnp.asarray(x1).reshape(-1, 3)
    other = jnp.broadcast_to(jnp.asarray(l_fixed, x1.dtype), x1.shape)
    return jnp.stack([x1, other] if sphere == 0 else [other, x1], axis=1)


def function_slice(fn, grid: Grid, l_fixed, sphere: int = 0) -> np.ndarray:
    """Any scalar function fn(lam (2, 3)) on `grid` over sphere `sphere`, the other at
    `l_fixed` (jitted; e.g. dw/dt = gauge.dpdt(state, velocity, lam))."""
    lam = _pairs(grid.x, l_fixed, sphere)
    return np.asarray(jax.jit(jax.vmap(fn))(lam)).reshape(grid.lon.shape)


def _density_points(gauge, state, x, l_fixed, sphere: int):
    prepared = gauge.prepare(state)
    lam = _pairs(x, l_fixed, sphere)
    return jax.vmap(lambda l: gauge.density_prepared(prepared, l))(lam)


def density_slice(gauge, state, grid: Grid, l_fixed, sphere: int = 0) -> np.ndarray:
    """w = (4 pi)^2 p_rho on `grid` over sphere `sphere`, the other sphere at `l_fixed`
    (density relative to uniform: 1 is the uniform density)."""
    w = jax.jit(_density_points, static_argnums=(0, 4))(gauge, state, grid.x, l_fixed, sphere)
    return np.asarray(w).reshape(grid.lon.shape)


def density_marginal(
    gauge, state, grid: Grid, key, samples: int = 256, sphere: int = 0
) -> np.ndarray:
    """The marginal of w over the other sphere: the mean over `samples` uniform points
    there (Monte Carlo)."""

    @jax.jit
    def run(state, x, key):
        other = uniform(key, samples, 1, x.dtype)[:, 0]
        return jnp.mean(
            jax.lax.map(lambda o: _density_points(gauge, state, x, o, sphere), other), 0
        )

    return np.asarray(run(state, jnp.asarray(grid.x.reshape(-1, 3)), key)).reshape(grid.lon.shape)


def density_rate_slice(gauge, state, velocity, grid: Grid, l_fixed, sphere: int = 0):
    """dw/dt = D_rho w [velocity] on `grid` over sphere `sphere`, the other at `l_fixed`.

    The state's part (for the svd gauge: the SVD of T and its JVP) is computed eagerly,
    outside the jitted map over points: jitted, for one state (or a batch of one), the
    svd gauge's SVD JVP returns wrong dU, dV on the CPU (gauges._svd_jvp masks the
    coefficient 1 / (S_j^2 - S_i^2) by `diff != 0`, and XLA's fused S_j^2 - S_i^2 leaves
    a rounding residue on the diagonal instead of 0, so the mask lets 1 / 1e-19 through).
    """
    P, dP = gauge.prepare_jvp(state, velocity)  # eager on purpose (see above)

    @jax.jit
    def run(P, dP, lam):
        return jax.vmap(lambda l: gauge.terms(P, dP, l)[1])(lam)

    out = run(P, dP, _pairs(grid.x, l_fixed, sphere))
    return np.asarray(out).reshape(grid.lon.shape)


def field_slice(field, params, x, l_fixed, sphere: int = 0, t=None, features=None):
    """V (M, 2, 3) and div V (M,) of a field at the points x (M, 3) of sphere `sphere`,
    the other at `l_fixed` (the first state's row for a state-dependent field)."""
    V, div = evaluate(field, params, _pairs(x, l_fixed, sphere), t, features)
    return np.asarray(V[0]), np.asarray(div[0])


def mollweide(ax, grid: Grid, values, cmap="viridis", **kw):
    """A filled map of `values` (n_lat, n_lon) on a mollweide axes; returns the mappable."""
    m = ax.pcolormesh(grid.lon, grid.lat, values, shading="nearest", cmap=cmap, **kw)
    ax.set_xticklabels([])
    ax.grid(True, alpha=0.3)
    return m


def quiver(ax, grid: Grid, v, scale=None, **kw):
    """Arrows of tangent vectors v (n_lat, n_lon, 3) on a mollweide axes."""
    e, n = east_north(grid.x, v)
    u = e / np.maximum(np.cos(grid.lat), 1e-3)
    return ax.quiver(grid.lon, grid.lat, u, n, angles="xy", scale=scale, **kw)


def invariant_components(V1, l1, l2, eps: float = 1e-12):
    """Components of a tangent vector V1 at l1 along the two directions that a field
    covariant under global rotations can use: e_par = P(l1) l2 / |P(l1) l2| (towards l2)
    and e_rot = l1 x l2 / |l1 x l2|, with |P(l1) l2| = |l1 x l2| = sin(angle). A
    rotation-invariant problem (Heisenberg) has optimal fields V1 = f(c) e_par + g(c) e_rot,
    c = l1 . l2: plotting the components against c shows a whole field in two curves.
    Returns (c, V1 . e_par, V1 . e_rot) (each (M,))."""
    V1, l1, l2 = (np.asarray(x) for x in (V1, l1, l2))
    c = np.sum(l1 * l2, -1)
    par = l2 - c[:, None] * l1
    rot = np.cross(l1, l2)
    s = np.maximum(np.linalg.norm(rot, axis=-1), eps)
    return c, np.sum(V1 * par, -1) / s, np.sum(V1 * rot, -1) / s
