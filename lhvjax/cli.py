"""Command line: a thin layer over the library.

lhvjax visibility --gauge svd          v* of a gauge and how it was computed
lhvjax train CONFIG [--set k=v] [--out DIR] [--x64]
lhvjax demo [--out DIR]                the canonical comparison, on the CPU in minutes
lhvjax floor [CONFIG] --degree K [--set k=v] [--out DIR]   least-squares floor over a basis
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
    f.add_argument("--quiet", action="store_true", help="no progress lines")
    f.set_defaults(func=_cmd_floor)

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
