"""Training: outputs, no recompilation, NaN handling, resumption, precision."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lhvjax import cli, config, train

TINY = [
    "train.states=8",
    "train.points=32",
    "train.log_every=10",
    "train.eval_every=20",
    "train.checkpoint_every=20",
    "train.warmup=5",
    "eval.states=16",
    "eval.points=64",
    "field.width=16",
    "field.depth=2",
]


def tiny(*overrides):
    return config.load(None, [*TINY, *overrides])


def test_free_run_learns_and_writes_outputs(tmp_path):
    cfg = tiny(
        "name=free", "physics.hamiltonian=noninteracting", "train.steps=200", "train.lr=1e-2"
    )
    result = train.train(cfg, tmp_path, progress=False)
    s = json.loads((tmp_path / "summary.json").read_text())
    for key in ("normalized_loss", "normalized_loss_stderr", "config", "steps", "wall_time_s"):
        assert key in s
    assert s["config"]["physics"]["hamiltonian"] == "noninteracting"
    assert s["dtype"] == "float32"
    assert (tmp_path / "loss.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(10, 201, 10))
    # the linear part of the field holds the rotation: 200 steps get far below the zero field
    assert s["normalized_loss"] < 0.05
    assert result.summary["normalized_loss"] == s["normalized_loss"]


def test_step_compiles_once():
    cfg = tiny("train.steps=5")
    problem, field = config.build_problem(cfg), config.build_field(cfg)
    params = field.init(
        jax.random.key(0), jnp.ones((2, 3), jnp.float32), jnp.zeros((), jnp.float32)
    )
    opt = train.make_optimizer(cfg.train)
    step = train.make_step(problem, field, opt, cfg, 1.0, jax.random.key(1))
    state = opt.init(params)
    for i in range(6):
        params, state, loss = step(params, state, i)
    assert np.isfinite(float(loss))
    assert step._cache_size() == 1


def _poison_after(monkeypatch, n_ok):
    real = train.make_step

    def fake(*args, **kwargs):
        step = real(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(params, opt_state, i):
            calls["n"] += 1
            p, o, loss = step(params, opt_state, i)
            return p, o, loss if calls["n"] <= n_ok else loss * jnp.nan

        return wrapped

    monkeypatch.setattr(train, "make_step", fake)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    _poison_after(monkeypatch, 25)
    cfg = tiny("train.steps=60")
    with pytest.raises(train.NonFiniteLossError, match="last good checkpoint is step 20"):
        train.train(cfg, tmp_path, progress=False)
    import orbax.checkpoint as ocp

    assert ocp.CheckpointManager(tmp_path / "checkpoints").latest_step() == 20
    assert not (tmp_path / "summary.json").exists()


def test_cli_reports_nan_with_exit_code(tmp_path, monkeypatch, capsys):
    _poison_after(monkeypatch, 0)
    code = cli.main(["train", "x.toml", "--quiet"])  # missing file: a config error first
    assert code == 2 and "does not exist" in capsys.readouterr().err
    path = tmp_path / "c.toml"
    path.write_text("[train]\nsteps = 20\nlog_every = 10\n")
    code = cli.main(
        [
            "train",
            str(path),
            "--quiet",
            "--out",
            str(tmp_path / "o"),
            *sum((["--set", o] for o in TINY), []),
        ]
    )
    assert code == 3
    assert "no checkpoint had been written yet" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    cfg = tiny("train.steps=60")
    full = train.train(cfg, tmp_path / "full", progress=False)

    real = train.make_step

    def interrupting(*args, **kwargs):
        step = real(*args, **kwargs)
        calls = {"n": 0}

        def wrapped(*a):
            calls["n"] += 1
            if calls["n"] > 45:
                raise KeyboardInterrupt
            return step(*a)

        return wrapped

    monkeypatch.setattr(train, "make_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(train, "make_step", real)
    resumed = train.train(cfg, tmp_path / "cut", progress=False)  # resumes from step 40
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert full.summary["normalized_loss"] == resumed.summary["normalized_loss"]
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(10, 61, 10))


FORMULATIONS = {
    "weak_full": ["physics.formulation=weak", "train.points=512", "eval.points=1024"],
    "weak_odd": [
        "physics.formulation=weak",
        "weak.tests=odd",
        "train.points=512",
        "eval.points=1024",
    ],
    "lagrangian": [
        "physics.formulation=lagrangian",
        "train.points=256",
        "eval.points=4096",
        "eval.states=16",
        "eval.times=2",
        "lagrangian.times=2",
        "lagrangian.steps=4",
        "lagrangian.t_max=1.0",
    ],
    "learned_gauge": ["physics.gauge=learned"],
}


@pytest.mark.parametrize("name", FORMULATIONS)
def test_every_formulation_learns_the_noninteracting_control(name, tmp_path):
    # the control has an exact field (a rigid rotation, held by the linear skip): every
    # formulation must get far below the zero field (1) in 150 steps, and write its figures
    cfg = tiny(
        *FORMULATIONS[name],
        "physics.hamiltonian=noninteracting",
        "train.steps=150",
        "train.lr=1e-2",
        "train.eval_every=150",
        "train.checkpoint_every=150",
    )
    result = train.train(cfg, tmp_path, progress=False)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["formulation"] == cfg.physics.formulation
    q, se = s["normalized_loss"], s["normalized_loss_stderr"]
    assert q < 0.2 and 0 < se and q + 3 * se < 1, (q, se)  # significantly below V = 0
    if name == "learned_gauge":
        assert set(result.params) == {"field", "gauge"}
        assert "normalized_loss_vs_base" in s
    if name == "lagrangian":
        assert s["sign_normalized_loss"] < 0.2
