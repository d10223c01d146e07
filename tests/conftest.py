"""Shared pytest configuration for lhvjax.

Tests run in float64 by default: ``jax_enable_x64`` is switched on here, before any
test module is imported. Strict dtype promotion is deliberately *not* enabled, since
library code freely mixes Python floats with arrays.

A test that must run in float32 opts in by requesting the ``f32`` fixture. For the
duration of that test ``jax.enable_x64(False)`` is active, so new arrays (and freshly
traced jitted functions) default to float32; arrays created outside the test keep
their float64 dtype. Use ``key`` for a deterministic PRNG key.
"""

import os

# Also visible to any subprocess a test starts (e.g. the CLI).
os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    """A fixed typed PRNG key, ``jax.random.key(0)``."""
    return jax.random.key(0)


@pytest.fixture
def f32():
    """Run the requesting test with x64 disabled (float32 defaults)."""
    with jax.enable_x64(False):
        yield
