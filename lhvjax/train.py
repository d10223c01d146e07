"""Training a velocity field against the continuity residual.

One jitted step (`make_step`): draw a fresh states x points grid from the step's key
(fold_in(seed, step), so a resumed run draws exactly what an uninterrupted one would),
take the gradient of L(V) / L(0) and apply an optax update (Adam, warmup + cosine decay,
global-norm clipping). The host loop only logs, evaluates on a fixed held-out grid,
checkpoints (orbax) and watches for non-finite losses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lhvjax import config as config_lib
from lhvjax.config import Config
from lhvjax.fields import init_params
from lhvjax.gauges import Learned
from lhvjax.residual import loss, normalized_loss, sample_batch, state_features

__all__ = [
    "TrainResult",
    "NonFiniteLossError",
    "make_optimizer",
    "init_run",
    "update",
    "make_step",
    "train",
]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainResult(NamedTuple):
    summary: dict
    params: Any


def make_optimizer(
    t: config_lib.TrainConfig, *, inject: bool = False
) -> optax.GradientTransformation:
    """Adam with warmup + cosine decay from t.lr to t.lr * t.lr_final_fraction and clipping.

    With `inject=True` the peak learning rate is an `optax.inject_hyperparams`
    hyperparameter: it lives in the optimiser state (`state.hyperparams["learning_rate"]`,
    set from t.lr by `init`), so it may be a traced value that differs across a vmapped
    batch of runs. Both forms compute the same updates for the same learning rate.
    """

    def build(learning_rate):
        schedule = _warmup_cosine(t, learning_rate)
        parts = [optax.clip_by_global_norm(t.clip)] if t.clip > 0 else []
        return optax.chain(*parts, optax.adam(schedule))

    if inject:
        return optax.inject_hyperparams(build)(learning_rate=t.lr)
    return build(t.lr)


def _warmup_cosine(t: config_lib.TrainConfig, peak):
    """Linear warmup from 0 to `peak`, then cosine decay to peak * t.lr_final_fraction.

    A float peak gets `optax.warmup_cosine_decay_schedule` itself. A traced peak (which
    that function cannot take: it tests `peak_value == 0.0`) gets the same values: optax
    evaluates the schedule in float32 from the int32 step count, except that the
    Python-float peak multiplies the cosine factor in the default float precision, the
    product being rounded to float32 at the end; this follows that path step by step.
    """
    warmup = min(t.warmup, max(t.steps - 1, 1))
    total = max(t.steps, 2)
    if isinstance(peak, float):
        return optax.warmup_cosine_decay_schedule(
            0.0, peak, warmup, total, peak * t.lr_final_fraction
        )
    linear = optax.linear_schedule(0.0, jnp.asarray(peak, jnp.float32), warmup)
    cosine = optax.cosine_decay_schedule(1.0, total - warmup, alpha=t.lr_final_fraction)

    def schedule(count):
        value = jnp.where(count < warmup, linear(count), peak * cosine(count - warmup))
        return value.astype(jnp.float32)

    return schedule


def init_run(field, optimizer, key, n_features: int, dtype, gauge=None):
    """(params, opt_state, data key) of a run seeded by `key` (= jax.random.key(train.seed)).

    Pure, so a sweep can vmap it over seeds; `train` uses it for the same numbers. With a
    learned `gauge` the parameters are {"field": ..., "gauge": ...}, trained together.
    """
    k_init, k_data = jax.random.split(key)
    params = init_params(field, k_init, n_features=n_features, dtype=dtype)
    if isinstance(gauge, Learned):
        params = {"field": params, "gauge": gauge.init(jax.random.fold_in(k_init, 1), dtype)}
    return params, optimizer.init(params), k_data


def update(problem, field, optimizer, params, opt_state, batch, scale):
    """One optimiser step on `batch` (pure): (params, opt_state, loss / scale)."""

    def loss_fn(params):
        return loss(problem, field, params, batch, scale)

    value, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


def _groups(cfg: Config, section) -> int:
    # training: one time group unless the field sees t. The held-out set always has
    # eval.times groups, so that every kind of field is scored on as many states
    return section.times if cfg.field.kind == "time_dependent" else 1


def make_step(problem, field, optimizer, cfg: Config, scale, key):
    """The jitted training step (params, opt_state, step) -> (params, opt_state, loss)."""
    t = cfg.train
    groups = _groups(cfg, t)

    @jax.jit
    def step(params, opt_state, i):
        batch = sample_batch(problem, jax.random.fold_in(key, i), groups, t.states, t.points)
        return update(problem, field, optimizer, params, opt_state, batch, scale)

    return step


def _feature_count(problem) -> int:
    from lhvjax.quantum import Bloch

    gauge = problem.gauge.base if isinstance(problem.gauge, Learned) else problem.gauge
    s = Bloch(jnp.zeros(3), jnp.zeros(3), jnp.diag(jnp.array([0.3, 0.2, 0.1])))
    prepared, dprepared = gauge.prepare_jvp(s, s)
    return state_features(gauge, s, s, prepared, dprepared, problem.visibility).shape[0]


def _all_finite(tree) -> bool:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return bool(jnp.all(jnp.stack(leaves))) if leaves else True


def train(
    cfg: Config, out: str | Path | None = None, *, progress: bool = True, resume: bool = True
) -> TrainResult:
    """Train `cfg`'s field; with `out`, write metrics, checkpoints, summary.json and a plot."""
    with jax.enable_x64(cfg.train.x64):
        return _train(cfg, Path(out) if out is not None else None, progress, resume)


def _train(cfg: Config, out: Path | None, progress: bool, resume: bool) -> TrainResult:
    t0 = time.perf_counter()
    t = cfg.train
    problem = config_lib.build_problem(cfg)
    field = config_lib.build_field(cfg)
    dtype = jnp.zeros(()).dtype
    optimizer = make_optimizer(t)
    params, opt_state, k_data = init_run(
        field, optimizer, jax.random.key(t.seed), _feature_count(problem), dtype, problem.gauge
    )

    ev = cfg.eval
    held_out = sample_batch(problem, jax.random.key(ev.seed), ev.times, ev.states, ev.points, dtype)
    # the held-out grid is an argument, not a closed-over constant XLA would try to fold
    evaluate_on = jax.jit(lambda p, b: normalized_loss(problem, field, p, b))

    def evaluate(p):
        return evaluate_on(p, held_out)

    scale = evaluate(params)["loss_zero_field"]

    start = 0
    manager = None
    metrics_path = None
    if out is not None:
        import orbax.checkpoint as ocp

        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2))
        manager = ocp.CheckpointManager(
            (out / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )
        metrics_path = out / "metrics.jsonl"
        latest = manager.latest_step() if resume else None
        if latest is not None:
            target = {"step": jnp.asarray(0), "params": params, "opt_state": opt_state}
            restored = manager.restore(latest, args=ocp.args.StandardRestore(target))
            params, opt_state = restored["params"], restored["opt_state"]
            start = int(restored["step"])
            _truncate_metrics(metrics_path, start)
        elif metrics_path.exists():
            metrics_path.unlink()

    history: list[dict] = _read_metrics(metrics_path) if metrics_path else []
    step_fn = make_step(problem, field, optimizer, cfg, scale, k_data)
    bar = _progress(progress, t.steps, start, cfg.name)
    losses = []
    last_good = start if start > 0 else None
    i = start
    rate_t, rate_i = time.perf_counter(), start
    try:
        while i < t.steps:
            params_new, opt_new, value = step_fn(params, opt_state, i)
            losses.append(value)
            i += 1
            if i % t.log_every and i != t.steps:
                params, opt_state = params_new, opt_new
                continue
            chunk = np.asarray(jnp.stack(losses))
            losses = []
            if not (np.all(np.isfinite(chunk)) and _all_finite(params_new)):
                raise NonFiniteLossError(
                    f"{cfg.name}: the loss became non-finite between steps {i - len(chunk)} and "
                    f"{i} (last values {chunk[-3:]}). Training stopped; "
                    + (
                        f"the last good checkpoint is step {last_good} in {out / 'checkpoints'}"
                        if out is not None and last_good is not None
                        else "no checkpoint had been written yet"
                    )
                    + ". Lower train.lr, keep train.clip > 0, or use --x64."
                )
            params, opt_state = params_new, opt_new
            row = {"step": i, "train_loss": float(chunk.mean())}
            now = time.perf_counter()
            row["steps_per_s"] = (i - rate_i) / max(now - rate_t, 1e-9)
            rate_t, rate_i = now, i
            if i % t.eval_every == 0 or i == t.steps:
                e = evaluate(params)
                row["eval_normalized_loss"] = float(e["normalized_loss"])
                row["eval_normalized_loss_stderr"] = float(e["normalized_loss_stderr"])
            history.append(row)
            if metrics_path:
                with metrics_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if manager is not None and (i % t.checkpoint_every == 0 or i == t.steps):
                state = {"step": jnp.asarray(i), "params": params, "opt_state": opt_state}
                manager.save(i, args=_standard_save(state))
                last_good = i
            if bar is not None:
                bar.update(i - bar.n)
                post = {"loss": f"{row['train_loss']:.4g}"}
                if "eval_normalized_loss" in row:
                    post["held-out"] = f"{row['eval_normalized_loss']:.4g}"
                bar.set_postfix(post)
    finally:
        if bar is not None:
            bar.close()
        if manager is not None:
            manager.wait_until_finished()

    final = {k: float(v) for k, v in evaluate(params).items()}
    if isinstance(problem.gauge, Learned):
        # the learned gauge moves L(0) too; also report L(V) against the base gauge's L(0)
        final["base_loss_zero_field"] = float(scale)
        final["normalized_loss_vs_base"] = final["loss"] / float(scale)
    summary = {
        "name": cfg.name,
        "formulation": cfg.physics.formulation,
        **final,
        "steps": t.steps,
        "wall_time_s": time.perf_counter() - t0,
        "dtype": str(dtype),
        "device": str(jax.devices()[0]),
        "held_out": {
            "seed": ev.seed,
            "times": ev.times,
            "states": ev.states,
            "points": ev.points,
        },
        "config": config_lib.to_dict(cfg),
    }
    if out is not None:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_history(history, out / "loss.png", title=cfg.name)
    return TrainResult(summary, params)


def _standard_save(state):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(state)


def _progress(enabled: bool, total: int, start: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=name, unit="step", dynamic_ncols=True)


def _read_metrics(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, step: int) -> None:
    rows = [r for r in _read_metrics(path) if r["step"] <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def plot_history(history: list[dict], path: Path, title: str = "", ax=None) -> None:
    """Training loss (normalised by the held-out L(0)) and held-out points with error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in history]
    line = ax.plot(
        steps, [r["train_loss"] for r in history], lw=1, alpha=0.6, label=f"{title} train"
    )
    ev = [r for r in history if "eval_normalized_loss" in r]
    if ev:
        ax.errorbar(
            [r["step"] for r in ev],
            [r["eval_normalized_loss"] for r in ev],
            yerr=[r["eval_normalized_loss_stderr"] for r in ev],
            fmt="o",
            color=line[0].get_color(),
            ms=4,
            capsize=2,
            label=f"{title} held-out",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("L(V) / L(0)")
    ax.grid(True, which="both", alpha=0.3)
    if own:
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
