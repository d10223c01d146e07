"""Test functions on S^2 x S^2: the pair sets, the quadrature, Funk-Hecke and the moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import systems
from scipy.special import eval_legendre

from lhvjax import harmonics
from lhvjax.quantum import Bloch


def test_pair_sets_split_the_full_set():
    for L in (1, 2, 3, 4):
        K = (L + 1) ** 2
        full, odd, free = (
            set(zip(*harmonics.pairs(L, k), strict=True)) for k in harmonics.PAIR_SETS
        )
        assert len(full) == K * K - 1
        assert odd | free == full and not odd & free
        n_visible = 1 + sum(2 * l + 1 for l in range(1, L + 1, 2))  # degree 0 and odd
        assert len(odd) == n_visible**2 - 1
    with pytest.raises(ValueError, match="unknown set of test functions 'even'"):
        harmonics.pairs(3, "even")


def test_quadrature_is_exact_for_harmonics():
    x, w = harmonics.quadrature(5)  # exact to degree 9
    Y = np.asarray(harmonics.sh(jnp.asarray(x), 4))
    gram = 4 * np.pi * (Y.T * w) @ Y
    np.testing.assert_allclose(gram, np.eye(25), atol=1e-13)


def test_harmonics_have_constant_norm():
    # the addition theorem: sum_A Y_A(x)^2 = (L + 1)^2 / 4 pi at every x (the learned gauge's
    # guard rests on it)
    Y = harmonics.sh(systems.directions(3, 512), 4)
    np.testing.assert_allclose(jnp.sum(Y**2, -1), 25 / (4 * np.pi), rtol=1e-13)


def test_sign_coefficients_are_the_legendre_series_of_sign():
    # c_l = (2l + 1) / 2 int_{-1}^{1} sign(x) P_l(x) dx, by Gauss-Legendre on each half
    z, wz = np.polynomial.legendre.leggauss(40)
    half = (z + 1) / 2
    for l, c in enumerate(harmonics.sign_coefficients(9)):
        integral = np.sum(wz / 2 * eval_legendre(l, half)) * (1 - (-1) ** l)
        assert c == pytest.approx((2 * l + 1) / 2 * integral, abs=1e-13)


def test_linear_moments_give_the_bell_statistics():
    # through Funk-Hecke the odd moments return n . a, n . b and n1^T T n2 exactly
    s = systems.one(systems.states(4, 1, 0.25), 0)
    n1, n2 = systems.directions(5, 2)
    m = harmonics.linear_moments(s, 5, "odd")
    assert float(harmonics.sign_from_moments(m, 5, n1, None)) == pytest.approx(float(n1 @ s.a))
    assert float(harmonics.sign_from_moments(m, 5, None, n2)) == pytest.approx(float(n2 @ s.b))
    assert float(harmonics.sign_from_moments(m, 5, n1, n2)) == pytest.approx(
        float(n1 @ s.T @ n2), abs=1e-14
    )


@pytest.mark.parametrize("gauge", ["svd", "linear"])
def test_every_gauge_has_the_same_odd_moments(gauge):
    # the moments the statistics see do not depend on the gauge (DESIGN section 3)
    lam, w = systems.product_quadrature(6)
    states = systems.states(6, 4, 0.2)
    dens = systems.batched(gauge).density(states, lam)  # (S, P)
    A, B = harmonics.pairs(3, "odd")
    Y1, Y2 = harmonics.sh(lam[:, 0], 3), harmonics.sh(lam[:, 1], 3)
    moments = jnp.einsum("sp,p,pm->sm", dens, w, Y1[:, A] * Y2[:, B])
    np.testing.assert_allclose(moments, harmonics.linear_moments(states, 3), atol=1e-14)
    # and they are not all zero
    assert float(jnp.max(jnp.abs(moments))) > 0.01


def test_linear_moments_are_linear_and_batched():
    s = systems.states(7, 3, 0.2)
    m = harmonics.linear_moments(s, 3)
    assert m.shape == (3, len(harmonics.pairs(3, "odd")[0]))
    zero = Bloch(jnp.zeros(3), jnp.zeros(3), jnp.zeros((3, 3)))
    np.testing.assert_allclose(harmonics.linear_moments(zero, 3), 0, atol=1e-15)
    both = jax.tree.map(lambda x: x[0] + 2 * x[1], s)
    np.testing.assert_allclose(harmonics.linear_moments(both, 3), m[0] + 2 * m[1], atol=1e-14)
