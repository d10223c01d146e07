"""Command line: a thin layer over the library.

lhvjax visibility --gauge svd          v* of a gauge and how it was computed
lhvjax train CONFIG [--set k=v] [--out DIR] [--x64]
lhvjax demo [--out DIR]                the canonical comparison, on the CPU in minutes
lhvjax floor [CONFIG] --degree K [--set k=v] [--out DIR]   least-squares floor over a basis
lhvjax floor [CONFIG] --degree K --per-state [--states S]   the same, fitted per state
lhvjax sweep SWEEP [--out DIR] [--coordinator H:P --num-processes N --process-id I]
                                       a grid of runs as vmapped, sharded programs
lhvjax bound --D 2 --d 2 [--nmax 10] [--plot FILE]   Theorem 2's dimension constraint
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_visibility(args) -> int:
    from lhvjax.gauges import get_gauge

    for name in args.gauge:
        v = get_gauge(name).visibility()
        print(f"{name}: v* = {v.value:.9f}")
        print(f"  {v.method}")
    return 0


def _cmd_train(args) -> int:
    from lhvjax import config, train

    overrides = list(args.set or [])
    if args.x64:
        overrides.append("train.x64=true")
    cfg = config.load(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    result = train.train(cfg, out, progress=not args.quiet, resume=not args.restart)
    s = result.summary
    print(
        f"{cfg.name}: held-out L(V)/L(0) = {s['normalized_loss']:.4g} "
        f"+- {s['normalized_loss_stderr']:.2g}  ({s['steps']} steps, {s['wall_time_s']:.0f} s)"
    )
    print(f"wrote {out / 'summary.json'} and {out / 'loss.png'}")
    return 0


def _cmd_floor(args) -> int:
    from lhvjax import config, floor

    cfg = config.load(args.config, list(args.set or []))
    if args.per_state:
        return _floor_per_state(args, cfg)
    per_state_only = {
        "--states": args.states,
        "--fit-points": args.fit_points,
        "--eval-points": args.eval_points,
        "--chunk": args.chunk,
    }
    for flag, given in per_state_only.items():
        if given is not None:
            print(f"lhvjax: error: {flag} needs --per-state", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.name}_floor_K{args.degree}"
    result = floor.run_floor(
        cfg,
        args.degree,
        batches=args.batches,
        time_degree=args.time_degree,
        basis=args.basis,
        rcond=args.rcond,
        progress=not args.quiet,
    )
    path = floor.write_summary(out, result)
    r = result
    print(
        f"{cfg.name} ({r['hamiltonian']}, {r['gauge']}): floor K={r['degree']} "
        f"{r['basis']} basis ({r['basis_size']} fields, rank {r['rank']}): held-out "
        f"L(V)/L(0) = {r['normalized_loss']:.4g} +- {r['normalized_loss_stderr']:.2g}, train "
        f"{r['train_normalized_loss']:.4g} ({r['wall_time_s']:.0f} s, "
        f"{r['peak_memory_mb']:.0f} MiB); wrote {path}"
    )
    return 0


def _floor_per_state(args, cfg) -> int:
    from lhvjax import floor

    if args.time_degree is not None or args.basis != "harmonic":
        print(
            "lhvjax: error: --per-state fits the harmonic basis per state (no --time-degree, "
            "no --basis invariant)",
            file=sys.stderr,
        )
        return 2
    out = args.out or Path("runs") / f"{cfg.name}_floor_K{args.degree}_per_state"
    result = floor.per_state_floor(
        cfg,
        args.degree,
        states=32 if args.states is None else args.states,
        fit_points=4096 if args.fit_points is None else args.fit_points,
        eval_points=4096 if args.eval_points is None else args.eval_points,
        rcond=args.rcond,
        chunk=8 if args.chunk is None else args.chunk,
        progress=not args.quiet,
    )
    path = floor.write_summary(out, result)
    r = result
    print(
        f"{cfg.name} ({r['hamiltonian']}, {r['gauge']}): per-state floor K={r['degree']} "
        f"({r['basis_size']} fields, rank {r['rank_min']}-{r['rank_max']}) over "
        f"{r['samples']['states']} held-out states: held-out "
        f"L(V)/L(0) = {r['normalized_loss']:.4g} +- {r['normalized_loss_stderr']:.2g} "
        f"(per-state mean {r['per_state_normalized_loss']:.4g} +- "
        f"{r['per_state_normalized_loss_stderr']:.2g}), train {r['train_normalized_loss']:.4g} "
        f"({r['wall_time_s']:.0f} s, {r['peak_memory_mb']:.0f} MiB); wrote {path}"
    )
    return 0


def _cmd_sweep(args) -> int:
    from lhvjax import sweep

    # before any other JAX work: the processes of a multi-host sweep meet here
    sweep.init_distributed(
        args.coordinator, args.num_processes, args.process_id, auto=args.distributed
    )
    spec = sweep.load_sweep(args.config)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    rows = sweep.run_sweep(spec, out, progress=not args.quiet)
    import jax

    if jax.process_index() == 0:
        print(
            f"{spec.name}: {len(rows)} of {len(spec.runs)} runs in {out / 'results.csv'} "
            f"({len(spec.groups)} program group(s), {jax.process_count()} process(es), "
            f"{jax.local_device_count()} device(s) each)"
        )
    return 0


def _cmd_bound(args) -> int:
    from lhvjax import bound

    try:
        print(bound.format_table(args.D, args.d, args.nmax))
        if args.plot:
            ds = sorted({args.d, *(args.plot_d or [2, 3, 20])})
            bound.plot_bound(args.D, ds, args.nmax, args.plot)
            print(f"wrote {args.plot}")
    except ValueError as err:
        print(f"lhvjax: error: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_demo(args) -> int:
    from lhvjax.demo import run_demo

    run_demo(Path(args.out), progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lhvjax",
        description="Search for state-independent hidden-variable velocity fields "
        "(continuity residual on products of spheres).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("visibility", help="admissible visibility v* of a gauge")
    v.add_argument("--gauge", nargs="+", default=["svd", "linear"], choices=["svd", "linear"])
    v.set_defaults(func=_cmd_visibility)

    t = sub.add_parser("train", help="train a velocity field from a TOML config")
    t.add_argument("config", help="TOML file (see experiments/)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. train.steps=500")
    t.add_argument("--out", help="output directory (default runs/NAME)")
    t.add_argument("--x64", action="store_true", help="train in float64")
    t.add_argument("--restart", action="store_true", help="ignore checkpoints in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    f = sub.add_parser("floor", help="least-squares floor of L(V)/L(0) over a finite basis")
    f.add_argument("config", nargs="?", help="TOML file (default: the built-in defaults)")
    f.add_argument("--degree", type=int, required=True, help="basis degree K (>= 1)")
    f.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. train.states=64")
    f.add_argument("--out", help="output directory (default runs/NAME_floor_KK)")
    f.add_argument("--batches", type=int, default=16, help="training grids (train.states x points)")
    f.add_argument("--basis", choices=["harmonic", "invariant"], default="harmonic")
    f.add_argument("--time-degree", type=int, help="time-dependent basis: Legendre degree in t")
    f.add_argument("--rcond", type=float, default=1e-10, help="relative eigenvalue cut-off")
    f.add_argument(
        "--per-state",
        action="store_true",
        help="fit a field to each held-out state alone (the state-dependent reference)",
    )
    f.add_argument("--states", type=int, help="--per-state: held-out states (default 32)")
    f.add_argument(
        "--fit-points", type=int, help="--per-state: fit points per state (default 4096)"
    )
    f.add_argument(
        "--eval-points", type=int, help="--per-state: evaluation points per state (default 4096)"
    )
    f.add_argument("--chunk", type=int, help="--per-state: states per vmapped step (default 8)")
    f.add_argument("--quiet", action="store_true", help="no progress lines")
    f.set_defaults(func=_cmd_floor)

    s = sub.add_parser("sweep", help="a grid of runs, vmapped and sharded (see lhvjax.sweep)")
    s.add_argument("config", help="sweep TOML file (see experiments/sweep_visibility.toml)")
    s.add_argument("--out", help="output directory (default runs/NAME); resumes what is there")
    s.add_argument("--coordinator", help="HOST:PORT of process 0 (several processes)")
    s.add_argument("--num-processes", type=int, help="number of processes (one per host)")
    s.add_argument("--process-id", type=int, help="this process's index in [0, N)")
    s.add_argument(
        "--distributed", action="store_true", help="join via JAX's cluster auto-detection"
    )
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=_cmd_sweep)

    b = sub.add_parser("bound", help="Theorem 2: dimension constraint D^(2N)-1 <= Nd(Nd+1)/2")
    b.add_argument("--D", type=int, default=2, help="qudit dimension (default 2: qubits)")
    b.add_argument("--d", type=int, default=2, help="dim Lambda_1 (default 2: the Bell model)")
    b.add_argument("--nmax", type=int, default=10, help="largest N in the table (default 10)")
    b.add_argument("--plot", metavar="FILE", help="also draw a figure like Fig. 4(b)")
    b.add_argument(
        "--plot-d", type=int, nargs="+", metavar="d", help="d values drawn (default 2 3 20 and --d)"
    )
    b.set_defaults(func=_cmd_bound)

    d = sub.add_parser("demo", help="the canonical comparison on the CPU (a few minutes)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from lhvjax.config import ConfigError
    from lhvjax.gauges import InadmissibleStateError
    from lhvjax.train import NonFiniteLossError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, InadmissibleStateError) as err:
        print(f"lhvjax: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"lhvjax: stopped: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
