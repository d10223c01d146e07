"""Local velocity fields (lhvjax.local): locality of the message-passing field under a
coupling graph that changes in time, tangency, start at V = 0, the known fields, and a
short training run on the noninteracting control (float64 unless stated)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lhvjax import local
from lhvjax import nqubits as nq
from lhvjax.sphere import uniform

# 4 qubits; the graph is 0-1 and 2-3 on [0, 1), then 1-2 on [1, 2), then 0-3 and 1-2 on [2, 3)
PULSES = [
    (0.0, 1.0, (0, 1), 1.0),
    (0.0, 1.0, (2, 3), 0.5),
    (1.0, 3.0, (1, 2), 1.0),
    (2.0, 3.0, (0, 3), 0.8),
]


def changing_graph():
    return nq.schedule(4, PULSES, fields=[nq.Zeeman(0, 1.0, (1, 0, 0), 0.5, 2.5)])


def randomised(field, n, scale=1.0):
    """Parameters with every leaf random (the zero-initialised outputs make V = 0 at init,
    which would hide any dependence)."""
    params = local.init_params(field, jax.random.key(1), n, jnp.float64)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    leaves = [
        scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(tree, leaves)


def blocks(field, params, H, t, lam):
    """|dV_j / dl_i| summed over components and points: (N, N), [j, i]."""
    return np.asarray(_blocks(field, params, H.drive(t), lam))


@jax.jit(static_argnums=0)
def _blocks(field, params, drive, lam):
    J = jax.vmap(jax.jacfwd(lambda x: field.apply(params, x, drive)))(lam)  # (P, N, 3, N, 3)
    return jnp.sum(jnp.abs(J), axis=(0, 2, 4))


def test_local_field_respects_the_graph_at_every_time():
    H = changing_graph()
    n = 4
    field = local.LocalField(n, H.pairs, width=8, depth=1)
    params = randomised(field, n)
    lam = uniform(jax.random.key(3), 6, n)
    for t in (0.5, 1.5, 2.5, 3.5):
        B = blocks(field, params, H, t, lam)
        coupled = np.asarray(H.adjacency(t)) != 0
        off = ~np.eye(n, dtype=bool)
        # exactly zero where qubits are uncoupled at t, nonzero where they are coupled
        assert np.all(B[off & ~coupled] == 0.0), (t, B)
        assert np.all(B[coupled] > 1e-3), (t, B)
        assert np.all(np.diag(B) > 1e-3)
    # the graph of t = 0.5 and t = 1.5 differ: the same field switches its dependence
    assert blocks(field, params, H, 0.5, lam)[1, 2] == 0 < blocks(field, params, H, 1.5, lam)[1, 2]


def test_nonlocal_field_couples_everything():
    H = nq.schedule(3, [(0.0, 1.0, (0, 1), 1.0)])
    field = local.NonlocalField(3, width=8, depth=1, local_part=False)
    B = blocks(field, randomised(field, 3), H, 1.5, uniform(jax.random.key(3), 6, 3))
    assert np.all(B > 1e-3)  # at t = 1.5 no qubits interact, yet every V_j sees every l_i


@pytest.mark.parametrize("kind", ["local", "nonlocal", "plain"])
def test_fields_tangent_and_start_at_zero(kind):
    H = nq.schedule(3, [(0.0, 2.0, (0, 1), 1.0)], fields=[nq.Zeeman(2, 1.0)])
    field = {
        "local": local.LocalField(3, H.pairs, width=8, depth=1),
        "nonlocal": local.NonlocalField(3, width=8, depth=1, local_width=4),
        "plain": local.NonlocalField(3, width=8, depth=1, local_part=False),
    }[kind]
    lam = uniform(jax.random.key(4), 5, 3)
    drive = H.drive(1.2)
    apply = jax.jit(jax.vmap(field.apply, (None, 0, None)))
    V0 = apply(local.init_params(field, jax.random.key(0), 3, jnp.float64), lam, drive)
    assert float(jnp.max(jnp.abs(V0))) == 0.0
    V = apply(randomised(field, 3), lam, drive)
    assert float(jnp.max(jnp.abs(jnp.sum(V * lam, -1)))) < 1e-14
    assert float(jnp.max(jnp.abs(V))) > 1e-2


def test_known_fields():
    H = changing_graph()
    lam = uniform(jax.random.key(5), 7, 4)
    drive = H.drive(1.0)
    V = jax.vmap(lambda x: local.rotation_field().apply({}, x, drive))(lam)
    want = np.cross(np.array([1.0, 0, 0]), np.asarray(lam[:, 0]))
    np.testing.assert_allclose(V[:, 0], want, atol=1e-15)
    np.testing.assert_allclose(V[:, 1:], 0, atol=1e-15)
    Z = jax.vmap(lambda x: local.zero_field().apply({}, x, drive))(lam)
    assert float(jnp.max(jnp.abs(Z))) == 0.0


def test_precession_skip_holds_the_exact_field():
    # with B = epsilon and everything else zero, the local field is h_j x l_j exactly
    H = changing_graph()
    field = local.LocalField(4, H.pairs, width=4, depth=1)
    params = local.init_params(field, jax.random.key(0), 4, jnp.float64)
    eps = np.zeros((3, 3, 3))
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        eps[a, b, c], eps[a, c, b] = 1, -1
    params["params"]["_Precession_0"]["B"] = jnp.asarray(eps)
    lam = uniform(jax.random.key(6), 5, 4)
    drive = H.drive(0.7)
    got = jax.jit(jax.vmap(lambda x: field.apply(params, x, drive)))(lam)
    want = jax.vmap(lambda x: local.rotation_field().apply({}, x, drive))(lam)
    np.testing.assert_allclose(got, want, atol=1e-15)


def test_training_on_the_control_reduces_the_loss(f32):
    # Theorem 1's setting in 2 qubits: the local field must move well below L(0), and the
    # same seed must give the same numbers
    H = nq.Hamiltonian(
        2,
        zeeman=[nq.Zeeman(0, 1.0, (0, 0, 1), 0.0, 1.0), nq.Zeeman(1, 0.7, (1, 0, 0), 0.5, 2.0)],
    )
    problem = nq.Problem(H, 0.2, t_max=2.0)
    field = local.LocalField(2, H.pairs, width=8)
    ev = local.held_out(problem, jax.random.key(99), times=2, states=8, points=64)
    kw = dict(steps=120, times=2, states=8, points=32, lr=3e-2, warmup=10, eval_batch=ev)
    a = local.train_field(problem, field, seed=0, **kw)
    b = local.train_field(problem, field, seed=0, **kw)
    assert a["final"]["normalized_loss"] < 0.1
    assert a["final"]["normalized_loss"] == b["final"]["normalized_loss"]
    assert a["history"][-1]["step"] == 120
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(a["params"]))
    # one compilation serves every step and both runs
    step = local.make_train_step(problem, field, local._optimizer(120, 3e-2, 10), 2, 8, 32)
    assert step._cache_size() == 1


@pytest.mark.slow
def test_hutchinson_training_step_runs(f32):
    H = nq.schedule(2, [(0.0, 1.0, (0, 1), 1.0)])
    problem = nq.Problem(H, 0.2, t_max=1.0, divergence="hutchinson")
    field = local.LocalField(2, H.pairs, width=4)
    ev = local.held_out(problem, jax.random.key(99), times=1, states=4, points=16)
    out = local.train_field(problem, field, steps=5, times=1, states=4, points=8, eval_batch=ev)
    assert np.isfinite(out["final"]["normalized_loss"])
