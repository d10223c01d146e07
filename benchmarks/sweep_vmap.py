"""Wall time of 8 seeds trained in one vmapped program against 1 seed (not a test).

    python benchmarks/sweep_vmap.py [--steps 200] [--quick] [--out benchmarks/results]

For each configuration the whole run (initialisation, held-out L(0), `steps` training
steps in lax.scan, held-out evaluation) is `sweep.make_train_fn(cfg)`, compiled ahead of
time as `jax.jit(jax.vmap(train_fn))` for a batch of 1 seed and for 8 seeds. Compile
time is reported apart; the run time is the median of `--repeats` calls. The target is
8 seeds in under 3x the wall time of 1. "Python loop" is what 8 separate runs of the
same compiled program would take (8 x the 1-seed time, compiles excluded). As a check,
seed 0 must come out the same alone and in the batch of 8. Process CPU time is reported
beside wall time: on a shared machine the wall time also measures the other work.

Writes benchmarks/results/sweep_vmap.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from lhvjax import config, sweep

CONFIGS = {
    # the canonical search config (experiments/heisenberg_svd.toml, default batch/width)
    "canonical (svd, width 64, depth 3, 32 states x 256 points)": [
        "physics.hamiltonian=heisenberg",
        "physics.gauge=svd",
    ],
    "small (svd, width 32, depth 2, 8 states x 64 points)": [
        "physics.hamiltonian=heisenberg",
        "physics.gauge=svd",
        "field.width=32",
        "field.depth=2",
        "train.states=8",
        "train.points=64",
    ],
}
EVAL = ["eval.times=2", "eval.states=32", "eval.points=512"]  # keep the scoring cheap


def measure(overrides: list[str], steps: int, seeds: int, repeats: int) -> dict:
    cfg = config.load(None, [*overrides, *EVAL, f"train.steps={steps}"])
    spec = sweep.parse_sweep(
        {"base": config.to_dict(cfg) | {"name": "bench"}, "grid": {"seeds": seeds}}
    )
    runs = list(spec.runs)
    out = {"steps": steps, "config": overrides}
    with jax.enable_x64(cfg.train.x64):
        train_fn = sweep.make_train_fn(cfg)
        program = jax.jit(jax.vmap(train_fn))
        results = {}
        for n in (1, seeds):
            hp = jax.device_put(sweep.hparams(runs[:n]))
            t0 = time.perf_counter()
            compiled = program.lower(hp).compile()
            compile_s = time.perf_counter() - t0
            times, cpu = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                metrics = jax.block_until_ready(compiled(hp))
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            results[n] = metrics
            out[f"compile_s_{n}"] = compile_s
            out[f"run_s_{n}"] = float(np.median(times))
            out[f"cpu_s_{n}"] = float(np.median(cpu))
            out[f"normalized_loss_{n}"] = [float(x) for x in np.asarray(metrics["normalized_loss"])]
    a = float(results[1]["normalized_loss"][0])
    b = float(results[seeds]["normalized_loss"][0])
    out["seed0_rel_diff"] = abs(a - b) / abs(a)
    out["ratio"] = out[f"run_s_{seeds}"] / out["run_s_1"]
    out["cpu_ratio"] = out[f"cpu_s_{seeds}"] / out["cpu_s_1"]
    out["python_loop_s"] = seeds * out["run_s_1"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="the small config only, 50 steps")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args()
    configs = dict(list(CONFIGS.items())[1:]) if args.quick else CONFIGS
    steps = 50 if args.quick else args.steps

    rows = {}
    for name, overrides in configs.items():
        r = measure(overrides, steps, args.seeds, args.repeats)
        rows[name] = r
        n = args.seeds
        print(
            f"{name}: 1 seed {r['run_s_1']:.2f} s, {n} seeds {r[f'run_s_{n}']:.2f} s -> "
            f"{r['ratio']:.2f}x (compile {r['compile_s_1']:.0f} s / {r[f'compile_s_{n}']:.0f} s;"
            f" seed 0 alone vs in the batch: {r['seed0_rel_diff']:.1e})",
            flush=True,
        )

    device = str(jax.devices()[0])
    cores = os.cpu_count()
    meta = {
        "device": device,
        "cpu_cores": cores,
        "load_average": os.getloadavg(),
        "jax": jax.__version__,
        "platform": platform.platform(),
        "seeds": args.seeds,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_vmap.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    n = args.seeds
    lines = [
        f"# {n} seeds in one vmapped program against 1 seed",
        "",
        f"`python benchmarks/sweep_vmap.py{' --quick' if args.quick else ''}` on {device}, "
        f"{cores} cores (load average at the end {meta['load_average'][0]:.1f}), jax "
        f"{jax.__version__}. One program = `jax.jit(jax.vmap(sweep.make_train_fn(cfg)))`: "
        f"init, held-out L(0), {steps} steps in lax.scan and the held-out evaluation "
        f"({' '.join(EVAL)}); float32; run time = median of {args.repeats} calls, compile "
        "excluded. Target: under 3x.",
        "",
        f"| config | 1 seed wall (s) | {n} seeds wall (s) | wall ratio | CPU ratio "
        f"| {n} x 1 seed (s) | compile 1 / {n} (s) | seed 0 alone vs batched (rel.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['run_s_1']:.2f} | {r[f'run_s_{n}']:.2f} | **{r['ratio']:.2f}x** | "
            f"{r['cpu_ratio']:.2f}x | {r['python_loop_s']:.2f} | {r['compile_s_1']:.0f} / "
            f"{r[f'compile_s_{n}']:.0f} | {r['seed0_rel_diff']:.1e} |"
        )
    lines += [
        "",
        "CPU ratio: the same with process CPU time (all threads) instead of wall time, less "
        "sensitive to other work on a shared machine.",
    ]
    (out / "sweep_vmap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
