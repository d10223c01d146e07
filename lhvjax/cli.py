"""Command line: a thin layer over the library.

lhvjax visibility --gauge svd          v* of a gauge and how it was computed
lhvjax train CONFIG [--set k=v] [--out DIR] [--x64]
lhvjax demo [--out DIR]                the canonical comparison, on the CPU in minutes
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
