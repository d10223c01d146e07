"""Training-step and residual-evaluation throughput against batch shape, width and dtype.

    python benchmarks/train_step.py [--quick] [--out benchmarks/results]

For each (dtype, width, states, points) it times the jitted training step (steps/s) and
a jitted held-out residual evaluation ((state, point) pairs/s), after a warm-up call, as
the median of several repeats. The network part (the field and its divergence with the
parameter gradient, per point) is timed on its own and its FLOP count taken from XLA's
cost analysis; dividing by the measured throughput of a large float32 matmul on the same
device gives the fraction of the machine's practical float32 peak that it reaches.
Writes a JSON file and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def matmul_peak(dtype) -> float:
    n = 2048
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / _time(f, a)


def network_part(cfg, points, dtype):
    """FLOPs and time of V, div V and their parameter gradient over `points` points."""
    from lhvjax import config
    from lhvjax.fields import evaluate
    from lhvjax.sphere import uniform

    field = config.build_field(cfg)
    params = field.init(jax.random.key(0), jnp.ones((2, 3), dtype), jnp.zeros((), dtype))
    lam = uniform(jax.random.key(1), points, 2, dtype)

    def f(p):
        V, div = evaluate(field, p, lam)
        return jnp.sum(V**2) + jnp.sum(div**2)

    g = jax.jit(jax.grad(f))
    cost = g.lower(params).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan"))), _time(g, params)


def bench_one(width, states, points, x64, peak):
    from lhvjax import config, train
    from lhvjax.residual import normalized_loss, sample_batch

    with jax.enable_x64(x64):
        dtype = jnp.zeros(()).dtype
        cfg = config.load(
            None,
            [f"field.width={width}", f"train.states={states}", f"train.points={points}"],
        )
        problem, field = config.build_problem(cfg), config.build_field(cfg)
        params = field.init(jax.random.key(0), jnp.ones((2, 3), dtype), jnp.zeros((), dtype))
        opt = train.make_optimizer(cfg.train)
        step = train.make_step(problem, field, opt, cfg, 1.0, jax.random.key(1))
        state = opt.init(params)
        t_step = _time(lambda: step(params, state, 0)[2])
        batch = sample_batch(problem, jax.random.key(2), 1, states, points, dtype)
        ev = jax.jit(lambda p: normalized_loss(problem, field, p, batch)["normalized_loss"])
        t_eval = _time(ev, params)
        flops, t_net = network_part(cfg, points, dtype)
    return {
        "dtype": str(dtype),
        "width": width,
        "states": states,
        "points": points,
        "steps_per_s": 1 / t_step,
        "step_ms": 1e3 * t_step,
        "residual_evals_per_s": states * points / t_eval,
        "network_ms": 1e3 * t_net,
        "network_gflops": flops / 1e9,
        "network_fraction_of_f32_peak": flops / t_net / peak,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small grid (a minute on 2 cores)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if args.quick:
        grid = [(64, s, pts) for s in (8, 32) for pts in (128, 512)] + [(256, 32, 256)]
    else:
        grid = [(w, s, pts) for w in (64, 256) for s in (8, 32, 128) for pts in (128, 512, 2048)]
    peak = matmul_peak(jnp.float32)
    rows = []
    for x64 in (False, True):
        for width, states, points in grid:
            row = bench_one(width, states, points, x64, peak)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": str(jax.devices()[0]),
        "machine": platform.processor() or platform.machine(),
        "f32_matmul_peak_gflops": peak / 1e9,
        "jax": jax.__version__,
    }
    (out / "train_step.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"device: {meta['device']}; "
        f"float32 matmul peak {meta['f32_matmul_peak_gflops']:.1f} GFLOP/s",
        "",
        "| dtype | width | states | points | step ms | steps/s | residual evals/s "
        "| network ms | network % of f32 peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['width']} | {r['states']} | {r['points']} | {r['step_ms']:.2f} "
            f"| {r['steps_per_s']:.0f} | {r['residual_evals_per_s']:.3g} | {r['network_ms']:.2f} "
            f"| {100 * r['network_fraction_of_f32_peak']:.1f} |"
        )
    (out / "train_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
