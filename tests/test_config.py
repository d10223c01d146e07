"""Configs: every shipped experiment loads, and every kind of bad input is refused early."""

from pathlib import Path

import pytest

from lhvjax import config
from lhvjax.config import ConfigError

# run configs; the sweep files experiments/sweep_*.toml are checked in test_sweep.py
EXPERIMENTS = sorted(
    p
    for p in (Path(__file__).parent.parent / "experiments").glob("*.toml")
    if not p.stem.startswith("sweep_")
)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_experiments_load(path):
    cfg = config.load(path)
    assert cfg.name == path.stem
    config.build_problem(cfg)
    config.build_field(cfg)


def test_overrides_are_typed():
    cfg = config.load(
        None,
        [
            "train.steps=10",
            "physics.gauge=linear",
            "train.x64=true",
            "physics.n1=[1, 0, 0]",
            "name=abc",
        ],
    )
    assert cfg.train.steps == 10 and cfg.physics.gauge == "linear" and cfg.train.x64
    assert cfg.physics.n1 == (1.0, 0.0, 0.0) and cfg.name == "abc"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.stepz=10"], r"unknown key\(s\) train.stepz; \[train\] accepts: steps"),
        (["bogus.x=1"], "unknown section"),
        (["train.steps=ten"], "train.steps must be an integer"),
        (["train.steps=0"], "train.steps must be at least 1"),
        (["physics.gauge=bogus"], "physics.gauge = 'bogus' is not one of: svd, linear"),
        (["physics.visibility=0.3"], r"v\* = 0.26120"),
        (["physics.gauge=linear", "physics.visibility=0.26"], r"v\* = 0.250000"),
        (["field.activation=relu"], "field.activation = 'relu' is not one of"),
        (["field.kind=rotation"], "set physics.hamiltonian = 'noninteracting'"),
        (["physics.n1=[1, 0]"], "physics.n1 must have 3 entries"),
        (["train.lr=-1"], "train.lr must be a positive number"),
        (["train.steps"], "must look like section.key=value"),
        (["physics.hamiltonian=matrix", "physics.matrix_real=[[1, 2], [3, 4]]"], "4x4"),
    ],
)
def test_bad_configs_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config.load(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[physics]\nvisiblity = 0.1\n")
    with pytest.raises(ConfigError, match="physics.visiblity"):
        config.load(typo)


def test_user_matrix_hamiltonian():
    import numpy as np

    from lhvjax import quantum

    H = quantum.heisenberg(1.0)
    cfg = config.load(
        None,
        [
            "physics.hamiltonian=matrix",
            f"physics.matrix_real={np.real(H).tolist()}",
            f"physics.matrix_imag={np.imag(H).tolist()}",
        ],
    )
    np.testing.assert_allclose(config.build_hamiltonian(cfg.physics), H)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["physics.formulation=variational"], "physics.formulation = 'variational' is not one"),
        (["physics.formulation=weak", "weak.tests=even"], "weak.tests = 'even' is not one of"),
        (["physics.formulation=weak", "train.points=30"], "a multiple of weak.blocks"),
        (
            ["physics.formulation=lagrangian", "physics.gauge=linear"],
            "set lagrangian.sampling = 'weighted'",
        ),
        (
            ["physics.formulation=lagrangian", "field.kind=state_dependent"],
            "use field.kind = 'state_independent'",
        ),
        (["physics.formulation=lagrangian", "physics.gauge=learned"], "no meaning in the Lagr"),
        (["physics.gauge=learned", "learned_gauge.base=learned"], "learned_gauge.base"),
        (["physics.gauge=learned", "learned_gauge.degree=1"], "at least 2"),
        (["physics.gauge=learned", "physics.visibility=0.3"], "visibility 0.3 is not admiss"),
        (["weak.degree=two"], "weak.degree must be an integer"),
    ],
)
def test_formulation_and_gauge_errors_name_the_fix(overrides, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, overrides)


def test_formulations_build():
    from lhvjax.gauges import Learned
    from lhvjax.lagrangian import Lagrangian
    from lhvjax.weak import Weak

    cfg = config.load(None, ["physics.formulation=weak", "weak.tests=odd", "weak.degree=2"])
    assert config.build_problem(cfg).formulation == Weak(2, "odd", 4)
    cfg = config.load(
        None,
        ["physics.formulation=lagrangian", "lagrangian.sampling=weighted", "physics.gauge=linear"],
    )
    assert isinstance(config.build_problem(cfg).formulation, Lagrangian)
    cfg = config.load(None, ["physics.gauge=learned", "learned_gauge.width=8"])
    g = config.build_problem(cfg).gauge
    assert isinstance(g, Learned) and g.width == 8 and g.base.name == "svd"
