"""Cost of one jitted N-qubit training step against N, exact against Hutchinson divergence.

    python benchmarks/n_qubits.py [--quick] [--max-n 6] [--out benchmarks/results]

For N = 1..max-n: a Heisenberg chain with a local field on every qubit, states of S_v
(v = v*/2 of the N-qubit linear gauge) evolved to t ~ U[0, 1], the local (message-passing)
field of lhvjax.local, and a fixed grid of `times` x `states` states x `points` points per
step. Each step draws its batch (states, exact evolution, velocities), evaluates the
residual and applies an Adam update, as in lhvjax.local.train_field. Timed: steps/s as the
median of `repeats` calls after a warm-up call (compilation timed separately), with
block_until_ready. Divergence modes: "exact" (jacfwd, 3N JVPs per point) and "hutchinson"
(1 probe per estimate, two independent estimates for the unbiased loss: 2 JVPs per point).
Writes benchmarks/results/n_qubits.json and n_qubits.md.
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


def _time(fn, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())  # compile and warm up
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), compile_s


def bench_one(n, mode, times, states, points, width, repeats):
    from lhvjax import local
    from lhvjax import nqubits as nq

    fields = [nq.Zeeman(k, 1.0, (1.0, 0.0, 0.0)) for k in range(n)]
    H = nq.heisenberg(n, "chain", fields=fields)
    v = nq.LinearGauge(n).visibility().value / 2
    problem = nq.Problem(H, v, t_max=1.0, divergence=mode, probes=1)
    field = local.LocalField(n, H.pairs, width=width)
    dtype = jnp.zeros(()).dtype
    params = local.init_params(field, jax.random.key(0), n, dtype)
    opt = local._optimizer(1000, 1e-3, 10)
    state = opt.init(params)
    step = local.make_train_step(problem, field, opt, times, states, points)
    key = jax.random.key(1)
    t_step, t_compile = _time(lambda: step(params, state, 0, key, 1.0)[2], repeats)
    return {
        "n_qubits": n,
        "divergence": mode,
        "jvps_per_point": 3 * n if mode == "exact" else 2,
        "pauli_coordinates": 4**n,
        "times": times,
        "states": states,
        "points": points,
        "width": width,
        "dtype": str(dtype),
        "step_ms": 1e3 * t_step,
        "steps_per_s": 1 / t_step,
        "compile_s": t_compile,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N <= 3, few repeats")
    p.add_argument("--max-n", type=int, default=6)
    p.add_argument("--times", type=int, default=2)
    p.add_argument("--states", type=int, default=16)
    p.add_argument("--points", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    max_n, repeats = (3, 3) if args.quick else (args.max_n, args.repeats)
    rows = []
    for n in range(1, max_n + 1):
        for mode in ("exact", "hutchinson"):
            row = bench_one(n, mode, args.times, args.states, args.points, args.width, repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python benchmarks/n_qubits.py" + (" --quick" if args.quick else ""),
        "device": str(jax.devices()[0]),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
        "jax": jax.__version__,
        "repeats": repeats,
    }
    stem = "n_qubits_quick" if args.quick else "n_qubits"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    by = {(r["n_qubits"], r["divergence"]): r for r in rows}
    lines = [
        f"device: {meta['device']} ({meta['cpu_count']} cores); one jitted training step "
        f"(batch draw + exact evolution + residual + Adam), local field width {args.width}, "
        f"{args.times} times x {args.states} states x {args.points} points, {rows[0]['dtype']}, "
        f"median of {repeats}. Command: `{meta['command']}`",
        "",
        "| N | 4^N | exact: JVPs/pt | exact ms | exact steps/s | Hutchinson ms "
        "| Hutchinson steps/s | speed-up | compile s (exact / Hutch.) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in range(1, max_n + 1):
        e, h = by[(n, "exact")], by[(n, "hutchinson")]
        lines.append(
            f"| {n} | {4**n} | {e['jvps_per_point']} | {e['step_ms']:.1f} | "
            f"{e['steps_per_s']:.1f} | {h['step_ms']:.1f} | {h['steps_per_s']:.1f} | "
            f"{e['step_ms'] / h['step_ms']:.2f} | {e['compile_s']:.1f} / {h['compile_s']:.1f} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
