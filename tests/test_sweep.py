"""Sweeps: grouping, one vmapped program per group, sharding over devices and processes,
resuming, and equality with `train.train`.

One reference sweep (8 runs of one group: two seeds x two learning rates x two
visibilities, trained as two programs of four runs on one device) is computed once per
module; the other tests compare against its table. Runs are float64 (train.x64) so that
every comparison is tight.
"""

import csv
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lhvjax import cli, config, residual, sweep, train
from lhvjax.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """
name = "tiny"

[sweep]
chunk_steps = 10
max_runs_per_program = 4

[base.physics]
hamiltonian = "heisenberg"
gauge = "linear"

[base.field]
width = 8
depth = 1

[base.train]
steps = 20
states = 4
points = 16
warmup = 2
x64 = true

[base.eval]
states = 8
points = 32
times = 2

[grid]
seeds = [0, 1]
lr = [3e-3, 1e-2]
visibility = [0.1, 0.2]
"""

NUMBERS = (
    "normalized_loss",
    "normalized_loss_stderr",
    "per_state_normalized_loss",
    "loss",
    "loss_zero_field",
    "final_train_loss",
)


def by_id(rows):
    return {r["run_id"]: r for r in rows}


def assert_same_table(rows, ref, rtol=0.0):
    rows, ref = by_id(rows), by_id(ref)
    assert set(rows) == set(ref)
    for run_id, r in rows.items():
        for key in ("index", "seed", "lr", "visibility", "config"):
            assert r[key] == ref[run_id][key]
        for key in NUMBERS:
            np.testing.assert_allclose(
                float(r[key]), float(ref[run_id][key]), rtol=rtol, err_msg=f"{run_id} {key}"
            )


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "tiny.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def reference(sweep_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    rows = sweep.run_sweep(sweep_file, out, progress=False)
    return out, rows


def test_grid_groups_and_rows(sweep_file, reference):
    spec = sweep.load_sweep(sweep_file)
    assert len(spec.runs) == 8 and len(spec.groups) == 1  # seed, lr, v are traced values
    assert spec.axes == ("train.seed", "train.lr", "physics.visibility")
    out, rows = reference
    assert [int(r["index"]) for r in rows] == list(range(8))
    assert {r["runs_in_program"] for r in rows} == {"4"}
    assert all(r["finite"] == "True" for r in rows)
    losses = [float(r["normalized_loss"]) for r in rows]
    assert len(set(losses)) == 8 and all(0 < q < 10 for q in losses)
    for name in ("results.md", "loss_vs_lr.png", "loss_vs_visibility.png"):  # seeds: averaged
        assert (out / name).stat().st_size > 100, name


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").glob("sweep_*.toml")), ids=lambda p: p.stem
)
def test_shipped_sweeps_load(path):
    spec = sweep.load_sweep(path)
    assert spec.name == path.stem and spec.runs


def test_changing_a_shape_splits_groups():
    data = {
        "base": {"train": {"steps": 5}},
        "grid": {"width": [4, 8], "gauge": ["svd", "linear"], "lr": [1e-3, 1e-2]},
    }
    spec = sweep.parse_sweep(data)
    assert len(spec.runs) == 8 and len(spec.groups) == 4
    assert all(len(g.runs) == 2 for g in spec.groups)


def test_visibility_fraction_covers_each_gauge():
    data = {"grid": {"gauge": ["svd", "linear"], "visibility_fraction": [0.5, 1.0]}}
    v = {
        (r.cfg.physics.gauge, r.fraction): r.cfg.physics.visibility
        for r in sweep.parse_sweep(data).runs
    }
    assert v[("svd", 1.0)] == pytest.approx(1 / (1 + 2 * np.sqrt(2)))
    assert v[("linear", 1.0)] == pytest.approx(0.25)
    assert v[("linear", 0.5)] == pytest.approx(0.125)


def test_vmapped_group_equals_train_train(sweep_file, reference):
    """Each run of the vmapped program against `train.train` of its config.

    Not bit for bit: train.x64 makes the arithmetic float64, but flax keeps the
    parameters (and so Adam's moments) in float32, and XLA fuses the batched Adam update
    differently from the unbatched one, so on some steps a moment rounds to the other
    neighbouring float32. (Unbatched, the sweep's step function gives train.train's
    parameters bit for bit; the held-out grid is drawn inside the program rather than
    eagerly, which moves L(0) by an ulp.) After 20 steps that is ~1e-7 relative.
    """
    spec = sweep.load_sweep(sweep_file)
    _, rows = reference
    run = spec.runs[7]  # seed, learning rate and visibility all differ from the base
    assert (run.cfg.train.seed, run.cfg.train.lr, run.cfg.physics.visibility) == (1, 1e-2, 0.2)
    s = train.train(run.cfg, progress=False).summary
    for key in ("normalized_loss", "normalized_loss_stderr", "loss", "loss_zero_field"):
        np.testing.assert_allclose(float(rows[7][key]), s[key], rtol=2e-6, err_msg=key)
    assert float(rows[7]["normalized_loss"]) != float(rows[0]["normalized_loss"])


def test_traced_overrides_draw_the_same_batch(key):
    """sample_batch with the visibility and t_max as traced arguments (what a vmapped sweep
    passes) draws exactly what it draws from the problem's own values, so a sweep scores
    runs on train.train's held-out grid."""
    for kind, t_max in (("state_independent", 0.0), ("time_dependent", 0.7)):
        cfg = config.load(
            None, [f"field.kind={kind}", f"field.t_max={t_max}", "physics.visibility=0.17"]
        )
        problem = config.build_problem(cfg)
        ref = residual.sample_batch(problem, key, 2, 3, 4, jnp.float32)
        traced_t = t_max if t_max else None

        @jax.jit
        def draw(v, tm, problem=problem, traced_t=traced_t):
            return residual.sample_batch(
                problem,
                key,
                2,
                3,
                4,
                jnp.float32,
                visibility=v,
                t_max=tm if traced_t is not None else None,
            )

        got = draw(jnp.float32(problem.visibility), jnp.float32(t_max))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_resumed_sweep_equals_uninterrupted(sweep_file, reference, tmp_path, monkeypatch):
    _, ref = reference
    real = sweep.train_program
    calls = {"n": 0}

    def killed_after_one(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train_program", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(sweep_file, tmp_path, progress=False)
    first = sweep.read_results(tmp_path / "results.csv")
    assert len(first) == 4
    with (tmp_path / "results.csv").open("a") as fh:  # a row cut off by the kill
        fh.write(first[0]["run_id"][:5] + ",9,tiny-9")
    monkeypatch.setattr(sweep, "train_program", real)
    calls["n"] = 0
    rows = sweep.run_sweep(sweep_file, tmp_path, progress=False)
    assert len(rows) == 8
    assert_same_table(rows, ref)  # same compiled program, same numbers
    # the finished runs were not trained again
    monkeypatch.setattr(sweep, "train_program", killed_after_one)
    calls["n"] = 1
    assert len(sweep.run_sweep(sweep_file, tmp_path, progress=False, plots=False)) == 8


def _python(code: str, env_extra: dict, timeout=600):
    env = {**os.environ, **env_extra}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc, timeout=600):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"subprocess timed out:\n{out[-3000:]}")
    return proc.returncode, out


def test_sharded_over_four_devices_equals_one_device(sweep_file, reference, tmp_path):
    """Four fake CPU devices (XLA_FLAGS before JAX starts, so in a fresh process); groups
    of 3 runs are padded to 4, one run per device.

    This caught a real trap: under shard_map's default check_vma=True the held-out
    points (the same on every device) are device-invariant, and jax.grad of the density
    with respect to them transposes into a psum, so every held-out L(V) came out wrong by
    an amount growing with the device count (sweep.py turns the check off)."""
    out = tmp_path / "sharded"
    code = f"""
        import dataclasses, jax
        from lhvjax import sweep
        assert jax.local_device_count() == 4, jax.devices()
        spec = dataclasses.replace(sweep.load_sweep({str(sweep_file)!r}), max_runs_per_program=3)
        rows = sweep.run_sweep(spec, {str(out)!r}, progress=False, plots=False)
        print("rows", len(rows), sorted({{r["devices"] for r in rows}}))
    """
    proc = _python(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    code, text = _finish(proc)
    assert code == 0, text[-3000:]
    assert "rows 8 ['4']" in text
    rows = sweep.read_results(out / "results.csv")
    assert sorted(r["runs_in_program"] for r in rows) == ["2", "2", "3", "3", "3", "3", "3", "3"]
    # one run per device against four in one batch: the batched Adam update of the float32
    # parameters rounds differently on some steps (see test_vmapped_group_equals_train_train)
    assert_same_table(rows, reference[1], rtol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two jax processes compiling side by side: ~20 s on 2 cores
def test_two_processes_gather_one_table(sweep_file, reference, tmp_path):
    """Two processes on localhost (jax.distributed, gloo CPU collectives): each trains
    half of the runs, and process 0 writes the whole table."""
    out = tmp_path / "two"
    port = _free_port()
    procs = []
    for pid in range(2):
        code = f"""
            import sys
            from lhvjax import cli
            sys.exit(cli.main(["sweep", {str(sweep_file)!r}, "--out", {str(out)!r},
                               "--coordinator", "127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", "{pid}"]))
        """
        procs.append(_python(code, {}))
    results = [_finish(p) for p in procs]
    for code, text in results:
        assert code == 0, text[-3000:]
    assert "8 of 8 runs" in results[0][1]
    rows = sweep.read_results(out / "results.csv")
    assert sorted(r["process"] for r in rows) == ["0"] * 4 + ["1"] * 4
    assert not list(out.glob("*p1*"))  # only process 0 writes
    assert_same_table(rows, reference[1], rtol=1e-12)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[grid]\nwidth = 8\n", "grid.width must be a list"),
        ("[grid]\nwdith = [8]\n", "unknown grid axis 'wdith'"),
        ("[grid]\n'field.wdith' = [8]\n", "has no key 'wdith'"),
        ("[grid]\ngauge = ['svd', 'lienar']\n", "physics.gauge = 'lienar' is not one of"),
        ("[grid]\ngauge = ['linear']\nvisibility = [0.1, 0.26]\n", "not admissible"),
        ("[grid]\nvisibility_fraction = [0.5, 1.5]\n", "fractions of v* must be"),
        ("[grid]\nseeds = [0, 0]\n", "repeats a value"),
        ("[grid]\nlr = []\n", "empty list"),
        ("[sweep]\nchunk = 10\n", "unknown key(s) sweep.chunk"),
        ("[base.train]\nstpes = 10\n", "unknown key(s) train.stpes"),
        ("[gird]\nlr = [1e-3]\n", "unknown sweep key(s) or table(s) gird"),
        ("[[variants]]\nfield = { kind = 'zero' }\n", "needs a label"),
        ("[grid]\nt_max = [0.5, 1.0]\n", None),  # fine: t_max is a config value
        ("base = 'missing.toml'\n", "does not exist"),
        ("[grid]\nvisibility = [0.1]\nvisibility_fraction = [0.5]\n", "not both"),
    ],
)
def test_bad_sweep_files_are_config_errors(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    if message is None:
        sweep.load_sweep(path)
        return
    with pytest.raises(ConfigError) as err:
        sweep.load_sweep(path)
    assert message in str(err.value)


def test_cli_reports_a_bad_sweep_file(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text("[grid]\ngauge = ['linear']\nvisibility = [0.3]\n")
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sweep run 0 (physics.gauge='linear', physics.visibility=0.3)" in err
    assert "at most 0.2500" in err
    assert cli.main(["sweep", str(tmp_path / "nope.toml")]) == 2


def test_partial_distributed_flags_are_an_error():
    with pytest.raises(ConfigError, match="all three"):
        sweep.init_distributed("localhost:1234", None, None)


def test_duplicate_runs_are_an_error():
    data = {"variants": [{"label": "a"}, {"label": "b"}]}
    with pytest.raises(ConfigError, match="same config"):
        sweep.parse_sweep(data)


def test_results_csv_header(reference):
    out, _ = reference
    with (out / "results.csv").open() as fh:
        assert tuple(next(csv.reader(fh))) == sweep.COLUMNS


def test_formulations_and_learned_gauge_sweep(tmp_path):
    # formulations and the learned gauge as variants: every run trains and reports its own
    # held-out figures (sign statistics only where the Lagrangian form has them)
    text = SWEEP.replace('gauge = "linear"', 'gauge = "svd"').split("[grid]")[0]
    text += textwrap.dedent(
        """
        [grid]
        seeds = [0, 1]

        [[variants]]
        label = "weak"
        physics = { formulation = "weak", gauge = "svd" }

        [[variants]]
        label = "lagrangian"
        physics = { formulation = "lagrangian", gauge = "svd" }
        lagrangian = { times = 2, steps = 2 }

        [[variants]]
        label = "learned"
        physics = { gauge = "learned" }
        """
    )
    path = tmp_path / "forms.toml"
    path.write_text(text)
    rows = sweep.run_sweep(path, tmp_path / "out", progress=False)
    forms = {(r["variant"], r["formulation"], r["gauge"]) for r in rows}
    assert forms == {
        ("weak", "weak", "svd"),
        ("lagrangian", "lagrangian", "svd"),
        ("learned", "strong", "learned"),
    }
    assert len(rows) == 6
    for r in rows:
        assert r["finite"] == "True" and float(r["normalized_loss_stderr"]) > 0
        signs = float(r["sign_normalized_loss"])
        assert np.isfinite(signs) == (r["formulation"] == "lagrangian")
