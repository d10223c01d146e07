"""Batch sweeps: many training runs as a few compiled, vmapped and sharded programs.

    lhvjax sweep SWEEP.toml [--out DIR] [--coordinator HOST:PORT --num-processes N
                                         --process-id I] [--quiet]

The sweep file
--------------
A TOML file with a base run config, a grid and (optionally) variants::

    name = "sweep_visibility"          # optional; default: the file's stem

    [sweep]                            # optional settings of the sweep itself
    chunk_steps = 100                  # steps per compiled lax.scan chunk (default 100)
    max_runs_per_program = 64          # split bigger groups (memory); default: no limit
    eval_runs_at_once = 1              # runs scored together on the held-out grid (memory)

    [base]                             # a run config, exactly as `lhvjax train` reads it
    physics = { hamiltonian = "heisenberg" }
    train = { steps = 400 }
    # or: base = "heisenberg_svd.toml" (a path relative to this file)

    [grid]                             # the cross product of these axes, one list each
    gauge = ["svd", "linear"]          # short names: gauge, hamiltonian, ensemble,
    visibility_fraction = [0.5, 1.0]   #   visibility, kind, width, depth, modes,
    lr = [1e-3, 3e-3]                  #   activation, t_max, lr, steps, seed (seeds)
    seeds = [0, 1, 2]                  # or `seeds = 3` for 0, 1, 2
    "train.states" = [16, 32]          # any other key as "section.key"

    [[variants]]                       # optional: crossed with the grid; each one a
    label = "state-independent"        # label and a partial run config applied on
    field = { kind = "state_independent" }   # top of the base
    [[variants]]
    label = "state-dependent"
    field = { kind = "state_dependent", width = 32, modes = 16 }

`visibility_fraction = f` sets physics.visibility = f v*, with v* the run's gauge's
largest admissible visibility (0.2612 for svd, 0.25 for linear), so one grid can cover
(0, v*] in both gauges. Every run is a full `Config` and is validated as one: any
mistake (unknown key or axis, a scalar where a list belongs, a visibility above v*,
duplicate runs) is a `ConfigError` before any compute.

Programs
--------
Runs whose traced programs are identical form a group: everything except
train.seed, train.lr, physics.visibility and field.t_max (and the host-side
train.log_every / eval_every / checkpoint_every, which the sweep does not use)
must agree. Those four are traced, per-run values: the seed makes the run's keys,
the learning rate is an `optax.inject_hyperparams` hyperparameter, and the
visibility scales the sampled states (and the state-dependent field's features),
t_max the sampled times. Everything else (gauge, Hamiltonian, field kind, width,
depth, batch sizes, steps, dtype, ...) changes the program and splits groups.

A group trains as `jit(shard_map(vmap(run)))` programs: `init` (parameters and
optimiser state from each run's key), `evaluate` (held-out metrics, as
`residual.normalized_loss` on the grid `train.train` uses: eval.times x eval.states
states from jax.random.key(eval.seed) and eval.points points; its L(0) at the start
normalises the training loss, as in `train.train`), and `chunk` (lax.scan over
`chunk_steps` steps). The host calls `chunk` until train.steps, only to print progress
and note non-finite losses (such a run gets finite = False in its row; the others are
unaffected), then `evaluate` again. Compiled programs are kept per process, so a
second sweep over the same group does not compile again. Memory: a program holds all
its runs at once (cap it with max_runs_per_program); the held-out grid is scored
eval_runs_at_once runs at a time (lax.map).

Run by run the numbers are `train.train`'s for the same config: the same keys, draws,
held-out grid and learning-rate schedule (`train.make_optimizer(..., inject=True)`
reproduces the float schedule bit for bit). They are not bit-identical, because flax
keeps the parameters and Adam's moments in float32 even with train.x64 and XLA fuses
the batched update differently, so a moment can round to the neighbouring float32 on
some steps (~1e-7 relative after 20 steps; tests/test_sweep.py).

`make_train_fn(cfg)` gives the whole run as one pure function of its hyperparameters,
for `jax.jit(jax.vmap(train_fn))(hparams)` outside the driver.

Devices and hosts
-----------------
The runs axis is sharded over this process's devices (`jax.make_mesh` over
`jax.local_devices()`, `NamedSharding(mesh, P("runs"))`, padded to a multiple of the
device count by repeating the last run; the padding is discarded). Runs never
communicate, so each device trains its slice with no collectives (shard_map with
check_vma=False: see the note in `_GroupPrograms`).

Several hosts (one process per host, each driving all of its GPUs as local devices)
join with `jax.distributed.initialize`: pass --coordinator HOST:PORT --num-processes N
--process-id I, or set LHVJAX_COORDINATOR (or JAX_COORDINATOR_ADDRESS),
LHVJAX_NUM_PROCESSES and LHVJAX_PROCESS_ID; `--distributed` alone uses JAX's cluster
auto-detection (SLURM, Open MPI, ...). Every process reads the same sweep file;
process 0 reads DIR/results.csv and broadcasts which runs are finished. Each group's
pending runs are split into contiguous shares, one per process; after the group the
processes exchange their rows with `multihost_utils.process_allgather` (a collective,
so no shared file system is needed) and process 0 appends them to DIR/results.csv.
Every process must reach every group's exchange: if one dies, the others wait in it
until JAX's distributed timeouts end them. On a cluster:

    # on every host h = 0..N-1 (an srun / mpirun line, one task per node)
    lhvjax sweep experiments/sweep_visibility.toml --out runs/vis \\
        --coordinator host0:12345 --num-processes N --process-id h

or with SLURM `srun --nodes=N --ntasks-per-node=1 lhvjax sweep FILE --out DIR
--distributed`. Only process 0 writes, so DIR need only exist on host 0 (the host of
the coordinator address). Install jax with CUDA (`pip install -e '.[cuda]'`) on every
host; nothing else changes.

Results
-------
DIR/results.csv: one row per run: its config values (and the full config as JSON),
held-out normalized_loss +- normalized_loss_stderr, the per-state figure, the mean
training loss of the last chunk, whether every loss stayed finite, and wall_time_s,
the wall time of the program that trained it, shared by its runs_in_program runs
(compile_s of it was compiling). Rows are appended as each program finishes (with
several processes, as each group finishes); a killed sweep started again with the same
--out skips every run whose row is there (a run is identified by a hash of its
config) and retrains the rest from step 0. DIR/loss_vs_AXIS.png plots the loss
against each swept axis (mean over seeds; error bars: standard error over seeds, or
the held-out standard error for one seed), one line per combination of the other
axes; DIR/results.md is the same as a table.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lhvjax import config as config_lib
from lhvjax.config import Config, ConfigError

__all__ = [
    "Run",
    "Group",
    "Sweep",
    "load_sweep",
    "parse_sweep",
    "make_train_fn",
    "hparams",
    "run_sweep",
    "init_distributed",
    "read_results",
    "COLUMNS",
]

ALIASES = {
    "gauge": "physics.gauge",
    "hamiltonian": "physics.hamiltonian",
    "ensemble": "physics.ensemble",
    "visibility": "physics.visibility",
    "kind": "field.kind",
    "width": "field.width",
    "depth": "field.depth",
    "modes": "field.modes",
    "activation": "field.activation",
    "t_max": "field.t_max",
    "lr": "train.lr",
    "steps": "train.steps",
    "seed": "train.seed",
    "seeds": "train.seed",
}
FRACTION = "visibility_fraction"
VARIANT = "variant"
# traced per run: they do not change the compiled program
VMAPPED = ("train.seed", "train.lr", "physics.visibility", "field.t_max")
# host-side settings of `lhvjax train` that a sweep does not use
UNUSED = ("train.log_every", "train.eval_every", "train.checkpoint_every")
SWEEP_OPTIONS = {"chunk_steps": 100, "max_runs_per_program": 0, "eval_runs_at_once": 1}

METRICS = (
    "normalized_loss",
    "normalized_loss_stderr",
    "per_state_normalized_loss",
    "per_state_normalized_loss_stderr",
    "sign_normalized_loss",  # the Lagrangian form's sign statistics (NaN for the others)
    "sign_normalized_loss_stderr",
    "loss",
    "loss_zero_field",
    "final_train_loss",
    "finite",
    "wall_time_s",
    "compile_s",
    "runs_in_program",
    "devices",
    "process",
)
COLUMNS = (
    "run_id",
    "index",
    "name",
    VARIANT,
    "gauge",
    "hamiltonian",
    "formulation",
    "kind",
    "width",
    "depth",
    "modes",
    "visibility",
    "v_star",
    FRACTION,
    "lr",
    "t_max",
    "steps",
    "states",
    "points",
    "seed",
    "x64",
    *METRICS,
    "group",
    "config",
)
_SHORT = {
    "physics.gauge": "gauge",
    "physics.formulation": "formulation",
    "physics.hamiltonian": "hamiltonian",
    "field.kind": "kind",
    "field.width": "width",
    "field.depth": "depth",
    "field.modes": "modes",
    "physics.visibility": "visibility",
    "train.lr": "lr",
    "field.t_max": "t_max",
    "train.steps": "steps",
    "train.states": "states",
    "train.points": "points",
    "train.seed": "seed",
    "train.x64": "x64",
}


# --- the sweep file ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    index: int  # position in the expansion of the grid
    run_id: str  # hash of the config (without its name): the key for resuming
    cfg: Config
    variant: str  # the variant's label ("" without variants)
    fraction: float | None  # visibility / v* when swept as visibility_fraction
    v_star: float


@dataclasses.dataclass(frozen=True)
class Group:
    index: int
    runs: tuple[Run, ...]
    description: str  # what sets this group apart, for progress lines


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[Run, ...]
    groups: tuple[Group, ...]
    axes: tuple[str, ...]  # swept axes: dotted config keys, visibility_fraction, variant
    chunk_steps: int = 100
    max_runs_per_program: int = 0  # 0: no limit
    eval_runs_at_once: int = 1


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file (see the module docstring)."""
    path = Path(path)
    data = config_lib.read_toml(path, "sweep file")
    return parse_sweep(data, default_name=path.stem, base_dir=path.parent)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set(data: dict, dotted: str, value) -> dict:
    section, key = dotted.split(".")
    out = dict(data)
    out[section] = {**out.get(section, {}), key: value}
    return out


def _axis_name(key: str) -> str:
    sections = tuple(config_lib._SECTION_TYPES)
    if key in ALIASES:
        return ALIASES[key]
    if key == FRACTION:
        return FRACTION
    parts = key.split(".")
    if len(parts) == 2 and parts[0] in sections:
        cls = config_lib._SECTION_TYPES[parts[0]]
        if parts[1] in {f.name for f in dataclasses.fields(cls)}:
            return key
        raise ConfigError(
            f"grid axis {key!r}: [{parts[0]}] has no key {parts[1]!r}; it accepts: "
            f"{', '.join(f.name for f in dataclasses.fields(cls))}"
        )
    raise ConfigError(
        f"unknown grid axis {key!r}; use one of {', '.join(sorted(ALIASES))}, {FRACTION}, "
        f'or a run-config key as "section.key" (sections: {", ".join(sections)})'
    )


def _grid_axes(grid: Any) -> dict[str, list]:
    if not isinstance(grid, dict):
        raise ConfigError(f"[grid] must be a table of axis = [values]; got {grid!r}")
    axes: dict[str, list] = {}
    for key, values in _flat(grid).items():
        name = _axis_name(key)
        if name == "train.seed" and isinstance(values, int) and not isinstance(values, bool):
            if values < 1:
                raise ConfigError(f"grid.{key} = {values}: give a positive count or a list")
            values = list(range(values))
        if not isinstance(values, list):
            raise ConfigError(
                f"grid.{key} must be a list of values; got {values!r} (put fixed values in [base])"
            )
        if not values:
            raise ConfigError(f"grid.{key} is an empty list")
        if len({json.dumps(v) for v in values}) != len(values):
            raise ConfigError(f"grid.{key} repeats a value: {values!r}")
        if name in axes:
            raise ConfigError(f"grid axis {key!r} is given twice (as {name})")
        if name == "train.seed":
            for s in values:
                if not (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31):
                    raise ConfigError(f"grid.{key}: seeds must be integers in [0, 2^31); got {s!r}")
        if name == FRACTION:
            for f in values:
                if not (isinstance(f, int | float) and not isinstance(f, bool) and 0 < f <= 1):
                    raise ConfigError(
                        f"grid.{key}: fractions of v* must be numbers in (0, 1]; got {f!r}"
                    )
        axes[name] = values
    if FRACTION in axes and "physics.visibility" in axes:
        raise ConfigError(f"grid: give either visibility or {FRACTION}, not both")
    return axes


def _variants(data: Any) -> list[tuple[str, dict]]:
    if data is None:
        return [("", {})]
    if not isinstance(data, list) or not data:
        raise ConfigError("variants must be a non-empty array of tables ([[variants]])")
    out = []
    for i, v in enumerate(data):
        if not isinstance(v, dict):
            raise ConfigError(f"variants[{i}] must be a table; got {v!r}")
        label = v.get("label")
        if not isinstance(label, str) or not label:
            raise ConfigError(f'variants[{i}] needs a label = "..." (a non-empty string)')
        rest = {k: x for k, x in v.items() if k != "label"}
        out.append((label, rest))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"variants: labels must be distinct; got {labels}")
    return out


def _options(data: Any) -> dict:
    if data is None:
        return dict(SWEEP_OPTIONS)
    if not isinstance(data, dict):
        raise ConfigError(f"[sweep] must be a table; got {data!r}")
    unknown = sorted(set(data) - set(SWEEP_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'sweep.{k}' for k in unknown)}; [sweep] accepts: "
            f"{', '.join(SWEEP_OPTIONS)}"
        )
    out = dict(SWEEP_OPTIONS)
    for k, v in data.items():
        low = 0 if k == "max_runs_per_program" else 1
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            raise ConfigError(f"sweep.{k} must be an integer >= {low}; got {v!r}")
        out[k] = v
    return out


def _compute_dict(cfg: Config, drop: tuple[str, ...]) -> dict:
    d = config_lib.to_dict(cfg)
    d.pop("name")
    for dotted in drop:
        section, key = dotted.split(".")
        d[section].pop(key)
    return d


def _digest(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def parse_sweep(data: dict, default_name: str = "sweep", base_dir: str | Path = ".") -> Sweep:
    """A validated `Sweep` from the parsed TOML of a sweep file."""
    from lhvjax.gauges import get_gauge

    if not isinstance(data, dict):
        raise ConfigError("a sweep file is a TOML table")
    allowed = ("name", "sweep", "base", "grid", "variants")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown sweep key(s) or table(s) {', '.join(unknown)}; a sweep file has "
            f"{', '.join(allowed)} (see `lhvjax.sweep`'s docstring)"
        )
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string; got {name!r}")
    options = _options(data.get("sweep"))
    base = data.get("base", {})
    if isinstance(base, str):
        base = config_lib.read_toml(Path(base_dir) / base, f"base = {base!r}: file")
    if not isinstance(base, dict):
        raise ConfigError(f"base must be a table (a run config) or a file name; got {base!r}")
    base = {k: v for k, v in base.items() if k != "name"}
    axes = _grid_axes(data.get("grid", {}))
    variants = _variants(data.get("variants"))

    names = list(axes)
    runs: list[Run] = []
    seen: dict[str, int] = {}
    points = list(itertools.product(*(axes[n] for n in names)))
    for label, overrides in variants:
        for values in points:
            index = len(runs)
            where = ", ".join(
                ([f"variant {label!r}"] if label else [])
                + [f"{n}={v!r}" for n, v in zip(names, values, strict=True)]
            )
            d = _merge(base, overrides)
            fraction = None
            for n, v in zip(names, values, strict=True):
                if n == FRACTION:
                    fraction = float(v)
                else:
                    d = _set(d, n, v)
            d["name"] = f"{name}-{index:04d}"
            try:
                if fraction is not None:
                    gauge = d.get("physics", {}).get("gauge", config_lib.PhysicsConfig.gauge)
                    if not isinstance(gauge, str):
                        raise ConfigError(f"physics.gauge must be a string; got {gauge!r}")
                    if gauge == "learned":  # admissible where its base gauge is
                        gauge = d.get("learned_gauge", {}).get("base", "svd")
                    try:
                        vs = get_gauge(gauge).visibility().value
                    except (KeyError, ValueError):
                        config_lib.from_dict(d)  # raises the ConfigError naming the gauge
                        raise
                    d = _set(d, "physics.visibility", fraction * vs)
                cfg = config_lib.from_dict(d)
            except ConfigError as err:
                raise ConfigError(f"sweep run {index} ({where or 'the base'}): {err}") from None
            run_id = _digest(_compute_dict(cfg, UNUSED))
            if run_id in seen:
                raise ConfigError(
                    f"sweep runs {seen[run_id]} and {index} ({where}) have the same config"
                )
            seen[run_id] = index
            vs = config_lib.build_gauge(cfg).visibility().value
            runs.append(Run(index, run_id, cfg, label, fraction, vs))

    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_digest(_compute_dict(run.cfg, VMAPPED + UNUSED)), []).append(run)
    swept = [n for n in names if len(axes[n]) > 1]
    if len(variants) > 1:
        swept.insert(0, VARIANT)
    return Sweep(
        name=name,
        runs=tuple(runs),
        groups=tuple(
            Group(i, tuple(rs), _describe(rs[0], swept)) for i, rs in enumerate(groups.values())
        ),
        axes=tuple(swept),
        chunk_steps=options["chunk_steps"],
        max_runs_per_program=options["max_runs_per_program"],
        eval_runs_at_once=options["eval_runs_at_once"],
    )


def _value(run: Run, axis: str):
    if axis == VARIANT:
        return run.variant
    if axis == FRACTION:
        return run.fraction
    section, key = axis.split(".")
    return getattr(getattr(run.cfg, section), key)


def _describe(run: Run, swept: list[str]) -> str:
    static = [a for a in swept if a not in VMAPPED and a != FRACTION]
    parts = [f"{_SHORT.get(a, a)}={_value(run, a)}" for a in static]
    return ", ".join(parts) or "all runs"


# --- one group as pure functions ----------------------------------------------------------


def _problem_at(problem, visibility):
    """`problem` with a traced visibility (what the state-dependent field's features are
    scaled by). `Problem.__post_init__` checks a float; the sweep has checked every run's
    visibility against v* already, so the copy skips that check."""
    p = copy.copy(problem)
    object.__setattr__(p, "visibility", visibility)
    return p


@dataclasses.dataclass(frozen=True)
class _RunFunctions:
    """Pure per-run functions of one group; hp = {seed, lr, visibility, t_max} (scalars)."""

    init: Callable  # hp -> (params, opt_state)
    steps: Callable  # (params, opt_state, scale, hp, start, n) -> (params, opt_state, losses)
    evaluate: Callable  # (params, hp) -> dict of held-out metrics
    total_steps: int


def _run_functions(cfg: Config) -> _RunFunctions:
    """Must be called (and its functions traced) under jax.enable_x64(cfg.train.x64)."""
    from lhvjax import train
    from lhvjax.residual import normalized_loss, sample_batch

    t, ev = cfg.train, cfg.eval
    problem = config_lib.build_problem(cfg)
    field = config_lib.build_field(cfg)
    dtype = jnp.zeros(()).dtype
    optimizer = train.make_optimizer(t, inject=True)
    n_features = train._feature_count(problem)
    n_groups = train._groups(cfg, t)
    # a traced t_max evolves the states of the strong and weak forms; the Lagrangian form's
    # horizon is lagrangian.t_max
    timed = cfg.field.kind == "time_dependent" and cfg.physics.formulation != "lagrangian"

    def sample(hp, key, groups, states, points):
        t_max = hp["t_max"] if timed else None
        return sample_batch(
            problem, key, groups, states, points, dtype, visibility=hp["visibility"], t_max=t_max
        )

    def init(hp):
        params, opt_state, _ = train.init_run(
            field, optimizer, jax.random.key(hp["seed"]), n_features, dtype, problem.gauge
        )
        hyper = {**opt_state.hyperparams, "learning_rate": jnp.asarray(hp["lr"], dtype)}
        return params, opt_state._replace(hyperparams=hyper)

    def held_out(params, hp):
        batch = sample(hp, jax.random.key(ev.seed), ev.times, ev.states, ev.points)
        return normalized_loss(_problem_at(problem, hp["visibility"]), field, params, batch)

    def steps(params, opt_state, scale, hp, start, n):
        k_data = jax.random.split(jax.random.key(hp["seed"]))[1]
        prob = _problem_at(problem, hp["visibility"])

        def body(carry, i):
            params, opt_state = carry
            batch = sample(hp, jax.random.fold_in(k_data, i), n_groups, t.states, t.points)
            params, opt_state, value = train.update(
                prob, field, optimizer, params, opt_state, batch, scale
            )
            return (params, opt_state), value

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), start + jnp.arange(n))
        return params, opt_state, losses

    return _RunFunctions(init, steps, held_out, t.steps)


def make_train_fn(cfg: Config) -> Callable:
    """The whole run as one pure function hp -> metrics, hp a dict of scalars {seed, lr,
    visibility, t_max} (see `hparams`): `jax.jit(jax.vmap(make_train_fn(cfg)))(hparams)`
    trains a batch of runs that share `cfg`'s shapes in one program and returns the
    held-out metrics of `residual.normalized_loss` and the training losses (steps,) per
    run. The sweep driver runs the same functions in chunks; build and call it under
    jax.enable_x64(cfg.train.x64)."""
    f = _run_functions(cfg)

    def train_fn(hp):
        params, opt_state = f.init(hp)
        scale = f.evaluate(params, hp)["loss_zero_field"]
        params, opt_state, losses = f.steps(params, opt_state, scale, hp, 0, f.total_steps)
        return {**f.evaluate(params, hp), "train_losses": losses}

    return train_fn


def hparams(runs, dtype=None) -> dict[str, np.ndarray]:
    """The traced per-run values of `runs` as arrays (current x64 mode's dtypes)."""
    fdtype = dtype or jnp.zeros(()).dtype
    idtype = jnp.zeros((), int).dtype
    return {
        "seed": np.array([r.cfg.train.seed for r in runs], idtype),
        "lr": np.array([r.cfg.train.lr for r in runs], fdtype),
        "visibility": np.array([r.cfg.physics.visibility for r in runs], fdtype),
        "t_max": np.array([r.cfg.field.t_max for r in runs], fdtype),
    }


# --- driver -------------------------------------------------------------------------------


def _chunk_length(steps: int, target: int) -> int:
    """A chunk length <= target that divides `steps` if one is at least target / 2 (one
    compiled chunk program), else `target` (and one more program for the remainder)."""
    target = max(1, min(target, steps))
    for n in range(target, max(target // 2, 1) - 1, -1):
        if steps % n == 0:
            return n
    return target


class _GroupPrograms:
    """The compiled init / chunk / evaluate programs of one group on a mesh, cached by
    the padded number of runs and the chunk length."""

    def __init__(self, cfg: Config, mesh, eval_runs_at_once: int):
        P = jax.P
        self.f = _run_functions(cfg)
        self.mesh = mesh
        self.sharding = jax.NamedSharding(mesh, P("runs"))
        self.eval_batch = eval_runs_at_once
        self.cache: dict = {}
        self.compile_s = 0.0
        spec, rep = P("runs"), P()
        f, E = self.f, eval_runs_at_once

        def init_local(hp):
            return jax.vmap(f.init)(hp)

        def eval_local(params, hp):
            return jax.lax.map(lambda a: f.evaluate(*a), (params, hp), batch_size=E)

        def chunk_local(n):
            def run(params, opt_state, scale, hp, start):
                def one(params, opt_state, scale, hp):
                    return f.steps(params, opt_state, scale, hp, start, n)

                return jax.vmap(one)(params, opt_state, scale, hp)

            return run

        def sm(fn, in_specs, out_specs):
            # check_vma=False: with it, a value that is the same on every device (the
            # held-out points, drawn from the constant key eval.seed) is "invariant", and
            # the transpose inside jax.grad of the density with respect to those points
            # becomes a psum over devices: every device would get the sum of all devices'
            # gradients, and held-out losses that grow with the device count. Runs never
            # communicate, so no invariance needs checking (tests/test_sweep.py compares
            # four devices with one).
            return jax.shard_map(
                fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
            )

        self._init = jax.jit(sm(init_local, (spec,), spec))
        self._eval = jax.jit(sm(eval_local, (spec, spec), spec))
        self._chunk = lambda n: jax.jit(
            sm(chunk_local(n), (spec, spec, spec, spec, rep), spec), donate_argnums=(0, 1)
        )

    def _compiled(self, name, fn, *args):
        key = (name, jax.tree.map(lambda x: (x.shape, x.dtype), args))
        key = (name, str(key))
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = fn.lower(*args).compile()
            self.compile_s += time.perf_counter() - t0
        return self.cache[key]

    def put(self, hp):
        return jax.device_put(hp, self.sharding)

    def init(self, hp):
        return self._compiled("init", self._init, hp)(hp)

    def chunk(self, params, opt_state, scale, hp, start: int, n: int):
        start = jnp.asarray(start)
        fn = self._compiled(("chunk", n), self._chunk(n), params, opt_state, scale, hp, start)
        return fn(params, opt_state, scale, hp, start)

    def evaluate(self, params, hp):
        return self._compiled("eval", self._eval, params, hp)(params, hp)


_PROGRAMS: dict = {}


def _programs(cfg: Config, mesh, eval_runs_at_once: int) -> _GroupPrograms:
    """The group's programs, kept per process (a second sweep over the same group, such
    as a resumed one, reuses the compiled executables)."""
    key = (
        _digest(_compute_dict(cfg, VMAPPED + UNUSED)),
        tuple(d.id for d in mesh.devices.flat),
        eval_runs_at_once,
        str(jnp.zeros(()).dtype),
    )
    if key not in _PROGRAMS:
        while len(_PROGRAMS) >= 8:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = _GroupPrograms(cfg, mesh, eval_runs_at_once)
    return _PROGRAMS[key]


def _logger(say: Callable[[str], None], head: str) -> Callable[[str], None]:
    return lambda msg: say(f"{head}: {msg}")


def _local_mesh():
    devices = jax.local_devices()
    return jax.make_mesh((len(devices),), ("runs",), devices=devices)


def _pad(runs: list[Run], multiple: int) -> list[Run]:
    return runs + [runs[-1]] * (-len(runs) % multiple)


def train_program(
    runs: list[Run],
    programs: _GroupPrograms,
    chunk_steps: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Train `runs` (one group) as one vmapped, sharded program; metrics per run."""
    t0 = time.perf_counter()
    compile0 = programs.compile_s
    devices = programs.mesh.size
    padded = _pad(list(runs), devices)
    hp = programs.put(hparams(padded))
    params, opt_state = programs.init(hp)
    # held-out L(0), as train.train takes it: from the held-out metrics at the start
    scale = programs.evaluate(params, hp)["loss_zero_field"]
    steps = runs[0].cfg.train.steps
    n = _chunk_length(steps, chunk_steps)
    finite = np.ones(len(padded), bool)
    last = np.full(len(padded), np.nan)
    i = 0
    while i < steps:
        m = min(n, steps - i)
        params, opt_state, losses = programs.chunk(params, opt_state, scale, hp, i, m)
        losses = np.asarray(losses)
        finite &= np.all(np.isfinite(losses), axis=1)
        last = losses.mean(axis=1)
        i += m
        if log is not None:
            ok = finite[: len(runs)]
            log(
                f"step {i}/{steps}: median train loss {np.nanmedian(last[: len(runs)]):.4g}"
                + ("" if ok.all() else f", {int((~ok).sum())} run(s) non-finite")
                + f" ({time.perf_counter() - t0:.0f} s)"
            )
    metrics = jax.tree.map(np.asarray, programs.evaluate(params, hp))
    wall = time.perf_counter() - t0
    out = {k: np.asarray(v, np.float64)[: len(runs)] for k, v in metrics.items()}
    for k in METRICS:  # figures a formulation does not report
        out.setdefault(k, np.full(len(runs), np.nan))
    out["final_train_loss"] = last[: len(runs)].astype(np.float64)
    out["finite"] = (finite[: len(runs)] & np.isfinite(out["normalized_loss"])).astype(float)
    out["wall_time_s"] = np.full(len(runs), wall)
    out["compile_s"] = np.full(len(runs), programs.compile_s - compile0)
    out["runs_in_program"] = np.full(len(runs), float(len(runs)))
    out["devices"] = np.full(len(runs), float(devices))
    out["process"] = np.full(len(runs), float(jax.process_index()))
    return out


def init_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """`jax.distributed.initialize` from arguments or the environment (LHVJAX_COORDINATOR
    or JAX_COORDINATOR_ADDRESS, LHVJAX_NUM_PROCESSES, LHVJAX_PROCESS_ID); with `auto`
    and nothing given, JAX's cluster auto-detection. Call before any other JAX work.
    Returns whether it initialised anything."""
    env = os.environ
    coordinator = coordinator or env.get("LHVJAX_COORDINATOR") or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("LHVJAX_NUM_PROCESSES"):
        num_processes = int(env["LHVJAX_NUM_PROCESSES"])
    if process_id is None and env.get("LHVJAX_PROCESS_ID"):
        process_id = int(env["LHVJAX_PROCESS_ID"])
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ConfigError(
            "several processes need all three of --coordinator HOST:PORT, --num-processes N "
            "and --process-id I (or LHVJAX_COORDINATOR, LHVJAX_NUM_PROCESSES, "
            "LHVJAX_PROCESS_ID); use --distributed alone for cluster auto-detection"
        )
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"process id {process_id} is not in [0, {num_processes})")
        jax.distributed.initialize(coordinator, num_processes, process_id)
        return True
    if auto:
        jax.distributed.initialize()
        return True
    return False


def read_results(path: str | Path) -> list[dict]:
    """The complete rows of a results.csv (a row cut off by a kill is dropped)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
            raise ConfigError(
                f"{path} was written with other columns ({len(reader.fieldnames)}); "
                "use another --out directory"
            )
        rows = []
        for row in reader:
            if None in row or any(row.get(c) is None for c in COLUMNS):
                continue
            try:
                json.loads(row["config"])
                float(row["normalized_loss"])
            except ValueError:
                continue
            rows.append(row)
    return rows


def _row(run: Run, metrics: dict[str, float], group: int) -> dict:
    c = run.cfg
    row = {
        "run_id": run.run_id,
        "index": run.index,
        "name": c.name,
        VARIANT: run.variant,
        "gauge": c.physics.gauge,
        "hamiltonian": c.physics.hamiltonian,
        "formulation": c.physics.formulation,
        "kind": c.field.kind,
        "width": c.field.width,
        "depth": c.field.depth,
        "modes": c.field.modes,
        "visibility": repr(c.physics.visibility),
        "v_star": repr(run.v_star),
        FRACTION: "" if run.fraction is None else repr(run.fraction),
        "lr": repr(c.train.lr),
        "t_max": repr(c.field.t_max),
        "steps": c.train.steps,
        "states": c.train.states,
        "points": c.train.points,
        "seed": c.train.seed,
        "x64": c.train.x64,
        "group": group,
        "config": json.dumps(config_lib.to_dict(c), sort_keys=True),
    }
    for k in METRICS:
        v = float(metrics[k])
        if k in ("finite",):
            row[k] = bool(v)
        elif k in ("runs_in_program", "devices", "process"):
            row[k] = int(v)
        else:
            row[k] = repr(v)
    return row


def _append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for row in rows:
            w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _gather(local: np.ndarray, rows: int) -> np.ndarray:
    """Stack every process's (rows, K) block (padded with run index -1) on process 0."""
    from jax.experimental import multihost_utils

    block = np.full((rows, local.shape[1]), -1.0)
    block[: len(local)] = local
    with jax.enable_x64(True):
        out = multihost_utils.process_allgather(block)
    return np.asarray(out).reshape(-1, local.shape[1])


def run_sweep(
    sweep: Sweep | str | Path,
    out: str | Path,
    *,
    progress: bool = True,
    plots: bool = True,
    mesh=None,
) -> list[dict]:
    """Train every unfinished run of `sweep`, appending to out/results.csv as each group
    finishes; then (process 0) write the plots and results.md. Returns the rows of this
    sweep's runs (on process 0; other processes return []).
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out)
    pid, nproc = jax.process_index(), jax.process_count()
    results = out / "results.csv"
    tag = f"[p{pid}] " if nproc > 1 else ""

    def say(msg):
        if progress:
            print(f"{tag}{msg}", flush=True)

    done = np.zeros(len(sweep.runs), np.int32)
    if pid == 0:
        out.mkdir(parents=True, exist_ok=True)
        rows = read_results(results)
        if results.exists():
            _rewrite(results, rows)  # drop a row cut off by a kill
        ids = {r["run_id"] for r in rows}
        done[:] = [run.run_id in ids for run in sweep.runs]
    if nproc > 1:
        from jax.experimental import multihost_utils

        done = np.array(multihost_utils.broadcast_one_to_all(done))
    if done.any():
        say(f"{sweep.name}: {int(done.sum())} of {len(sweep.runs)} runs already in {results}")
    mesh = mesh if mesh is not None else _local_mesh()

    by_index = {run.index: run for run in sweep.runs}

    def write(table: np.ndarray, group: Group) -> None:
        new = [
            _row(by_index[int(r[0])], dict(zip(METRICS, r[1:], strict=True)), group.index)
            for r in table
            if r[0] >= 0
        ]
        _append_rows(results, new)
        losses = ", ".join(f"{float(r['normalized_loss']):.4g}" for r in new[:8])
        more = ", ..." if len(new) > 8 else ""
        say(f"wrote {len(new)} row(s) of group {group.index + 1}: L(V)/L(0) = {losses}{more}")

    for group in sweep.groups:
        pending = [r for r in group.runs if not done[r.index]]
        if not pending:
            continue
        # contiguous shares, one per process; every process knows every share's size
        shares = np.array_split(np.arange(len(pending)), nproc)
        mine = [pending[i] for i in shares[pid]]
        cfg = group.runs[0].cfg
        blocks = []
        if mine:
            with jax.enable_x64(cfg.train.x64):
                programs = _programs(cfg, mesh, sweep.eval_runs_at_once)
                cap = sweep.max_runs_per_program or len(mine)
                parts = [mine[i : i + cap] for i in range(0, len(mine), cap)]
                for k, part in enumerate(parts):
                    head = (
                        f"group {group.index + 1}/{len(sweep.groups)} ({group.description}; "
                        f"{len(part)} run(s) on {mesh.size} device(s)"
                        + (f", program {k + 1}/{len(parts)}" if len(parts) > 1 else "")
                        + ")"
                    )
                    say(f"{head}: starting")
                    m = train_program(part, programs, sweep.chunk_steps, _logger(say, head))
                    idx = np.array([r.index for r in part], float)
                    block = np.column_stack([idx, *(m[key] for key in METRICS)])
                    if nproc == 1:
                        write(block, group)  # one process: rows as each program finishes
                    blocks.append(block)
        if nproc > 1:
            local = np.concatenate(blocks) if blocks else np.zeros((0, 1 + len(METRICS)))
            table = _gather(local, max(len(x) for x in shares))
            if pid == 0:
                write(table, group)
        for r in pending:
            done[r.index] = 1

    if pid != 0:
        return []
    ids = {run.run_id for run in sweep.runs}
    rows = [r for r in read_results(results) if r["run_id"] in ids]
    extra = len(read_results(results)) - len(rows)
    if extra:
        say(f"note: {extra} row(s) of {results} are of runs not in this sweep (kept, not plotted)")
    rows.sort(key=lambda r: int(r["index"]))
    if plots and rows:
        paths = plot_results(sweep, rows, out)
        (out / "results.md").write_text(results_table(sweep, rows))
        say(f"wrote {results}, {out / 'results.md'} and {len(paths)} plot(s)")
    return rows


# --- tables and plots -----------------------------------------------------------------------


def _row_value(row: dict, axis: str):
    if axis == VARIANT:
        return row[VARIANT]
    if axis == FRACTION:
        return float(row[FRACTION])
    section, key = axis.split(".")
    return json.loads(row["config"])[section][key]


def _aggregate(sweep: Sweep, rows: list[dict], keys: list[str]) -> list[dict]:
    """Rows averaged over seeds (and any axis not in `keys`), by the values of `keys`."""
    buckets: dict[tuple, list[dict]] = {}
    for r in rows:
        buckets.setdefault(tuple(_row_value(r, a) for a in keys), []).append(r)
    out = []
    for k, rs in buckets.items():
        q = np.array([float(r["normalized_loss"]) for r in rs])
        se = np.array([float(r["normalized_loss_stderr"]) for r in rs])
        mean = float(np.mean(q))
        err = float(np.std(q, ddof=1) / np.sqrt(len(q))) if len(q) > 1 else float(se[0])
        vis = np.mean([float(r["visibility"]) for r in rs])
        out.append(
            {
                "key": k,
                "mean": mean,
                "err": err,
                "n": len(rs),
                "visibility": vis,
                "within": float(np.mean(se)),
                "rows": rs,
            }
        )
    return out


def results_table(sweep: Sweep, rows: list[dict]) -> str:
    keys = [a for a in sweep.axes if a != "train.seed"]
    seeds = sorted({int(r["seed"]) for r in rows})
    head = [_SHORT.get(a, a) for a in keys]
    if FRACTION in keys:
        head.append("visibility")
    lines = [
        f"# {sweep.name}: held-out L(V)/L(0)",
        "",
        f"Mean over seeds {seeds}; ± is the standard error over seeds (the held-out standard "
        "error for one seed); `within` is the mean held-out standard error of one run.",
        "",
        "| " + " | ".join([*head, "L(V)/L(0)", "within", "runs"]) + " |",
        "|" + "---|" * (len(head) + 3),
    ]
    for a in _aggregate(sweep, rows, keys):
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in a["key"]]
        if FRACTION in keys:
            cells.append(f"{a['visibility']:.4g}")
        lines.append(
            "| "
            + " | ".join(
                [*cells, f"{a['mean']:.4g} ± {a['err']:.2g}", f"{a['within']:.2g}", str(a["n"])]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_results(sweep: Sweep, rows: list[dict], out: Path) -> list[Path]:
    """One PNG per swept axis: the loss against it, one line per combination of the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis in sweep.axes:
        if axis == "train.seed":
            continue
        others = [a for a in sweep.axes if a not in (axis, "train.seed")]
        agg = _aggregate(sweep, rows, [axis, *others])
        xs_all = sorted({a["key"][0] for a in agg}, key=_sort_key)
        categorical = not all(_is_number(x) for x in xs_all)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        series: dict[tuple, list[dict]] = {}
        for a in agg:
            series.setdefault(a["key"][1:], []).append(a)
        for label, pts in series.items():
            pts.sort(key=lambda a: _sort_key(a["key"][0]))
            if axis == FRACTION:
                x = [a["visibility"] for a in pts]
            elif categorical:
                x = [xs_all.index(a["key"][0]) for a in pts]
            else:
                x = [a["key"][0] for a in pts]
            name = ", ".join(
                str(v) if o == VARIANT else f"{_SHORT.get(o, o)}={v}"
                for o, v in zip(others, label, strict=True)
            )
            ax.errorbar(
                x,
                [a["mean"] for a in pts],
                yerr=[a["err"] for a in pts],
                marker="o",
                ms=4,
                capsize=2,
                ls=":" if categorical and axis != FRACTION else "-",
                label=name or None,
            )
        if categorical and axis != FRACTION:
            ax.set_xticks(range(len(xs_all)), [str(x) for x in xs_all])
        xname = "visibility v" if axis == FRACTION else _SHORT.get(axis, axis)
        ax.set_xlabel(xname)
        if axis == "train.lr":
            ax.set_xscale("log")
        if axis in (FRACTION, "physics.visibility"):
            ax.set_xlim(left=0)  # the sweep covers (0, v*]
        if all(a["mean"] > 0 for a in agg):
            ax.set_yscale("log")
        ax.set_ylabel("held-out L(V) / L(0)")
        ax.set_title(f"{sweep.name}: loss vs {xname}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if series and any(series):
            ax.legend(fontsize=7)
        fig.tight_layout()
        stem = "visibility" if axis == FRACTION else _SHORT.get(axis, axis).replace(".", "_")
        path = out / f"loss_vs_{stem}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _sort_key(x):
    return (0, x, "") if _is_number(x) else (1, 0, str(x))
