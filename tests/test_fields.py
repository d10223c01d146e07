"""Velocity fields: tangency, zero start, and the odd-network pitfall."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lhvjax import fields
from lhvjax.sphere import uniform


def _perturbed(field, key):
    params = field.init(key, jnp.ones((2, 3)), jnp.zeros(()))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(99), len(leaves))
    noise = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise, strict=True)])


def test_mlp_field_is_tangent_and_starts_at_zero():
    f = fields.MLPField(width=16, depth=2)
    lam = uniform(jax.random.key(0), 50)
    p0 = f.init(jax.random.key(1), lam[0], jnp.zeros(()))
    V0 = jax.vmap(lambda x: f.apply(p0, x, jnp.zeros(())))(lam)
    assert float(jnp.max(jnp.abs(V0))) == 0.0  # V = 0: the normalising field
    p = _perturbed(f, jax.random.key(1))
    V = jax.vmap(lambda x: f.apply(p, x, jnp.zeros(())))(lam)
    assert float(jnp.max(jnp.abs(jnp.sum(V * lam, -1)))) < 1e-12
    assert float(jnp.max(jnp.abs(V))) > 1e-2


def test_initial_network_is_not_odd():
    # Zero biases with tanh make the network odd, V(-l) = -V(l): it then cannot learn an
    # even field such as the exchange precession (l2 x l1, l1 x l2) that lowers the
    # Heisenberg floor (this stalled training at L/L0 = 1 before biases were randomised).
    f = fields.MLPField(width=16, depth=2, linear_skip=False)
    params = f.init(jax.random.key(2), jnp.ones((2, 3)), jnp.zeros(()))
    last = sorted(k for k in params["params"]["_MLP_0"])[-1]
    params["params"]["_MLP_0"][last]["kernel"] = jax.random.normal(
        jax.random.key(3), params["params"]["_MLP_0"][last]["kernel"].shape
    )
    lam = uniform(jax.random.key(4), 20)
    V = jax.vmap(lambda x: f.apply(params, x, jnp.zeros(())))(lam)
    Vm = jax.vmap(lambda x: f.apply(params, x, jnp.zeros(())))(-lam)
    even_part = jnp.linalg.norm(V + Vm) / jnp.linalg.norm(V - Vm)
    assert float(even_part) > 0.1


def test_time_input_changes_the_field():
    f = fields.MLPField(width=16, depth=2, time=True)
    p = _perturbed(f, jax.random.key(5))
    lam = uniform(jax.random.key(6), 5)
    a = jax.vmap(lambda x: f.apply(p, x, jnp.asarray(0.0)))(lam)
    b = jax.vmap(lambda x: f.apply(p, x, jnp.asarray(1.0)))(lam)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        f = fields.MLPField(activation="relu")
        f.init(jax.random.key(0), jnp.ones((2, 3)), jnp.zeros(()))
    with pytest.raises(ValueError, match=r"points must have shape \(P, N, 3\)"):
        fields.evaluate(fields.zero_field(), {}, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="needs the states' features"):
        f = fields.DeepONetField(width=4, depth=1, modes=2)
        p = f.init(jax.random.key(0), jnp.ones((2, 3)), jnp.ones(3))
        fields.evaluate(f, p, jnp.ones((4, 2, 3)))


def test_rotation_field_matches_precession():
    n1, n2 = np.array([0, 0, 2.0]), np.array([1.0, 1.0, 0])
    f = fields.rotation_field(1.5, n1, 0.5, n2)
    lam = uniform(jax.random.key(7), 10)
    V = jax.vmap(f)(lam)
    want0 = 1.5 * jnp.cross(n1 / 2, lam[:, 0])
    want1 = 0.5 * jnp.cross(n2 / np.sqrt(2), lam[:, 1])
    np.testing.assert_allclose(V[:, 0], want0, atol=1e-14)
    np.testing.assert_allclose(V[:, 1], want1, atol=1e-14)
