"""Run the canonical search experiments over seeds and write the results table.

    python experiments/run_all.py [--seeds 0 1 2] [--only NAME ...] [--readme README.md]

Each experiments/NAME.toml is trained once per seed (train.seed = s) into
experiments/runs/NAME/seed_s; finished runs are skipped and interrupted ones resume,
so a killed sweep can simply be started again. The table gives, per experiment, the
mean over seeds of the held-out L(V)/L(0) with the standard error of that mean
(spread over seeds), and the mean within-run held-out standard error. It is written to
experiments/results/search.{json,md}, drawn in search.png, and pasted into the README
between the `results:start` / `results:end` markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ORDER = [
    "free_svd",
    "free_linear",
    "heisenberg_svd",
    "heisenberg_svd_4x_steps",
    "heisenberg_svd_4x_width",
    "heisenberg_linear",
    "heisenberg_linear_4x_steps",
    "heisenberg_linear_4x_width",
    "heisenberg_svd_time_dependent",
    "heisenberg_svd_state_dependent",
    "heisenberg_linear_state_dependent",
]


def run(name: str, seeds: list[int], progress: bool) -> dict:
    from lhvjax import config, train

    summaries = []
    for seed in seeds:
        out = HERE / "runs" / name / f"seed_{seed}"
        done = out / "summary.json"
        if done.exists():
            summaries.append(json.loads(done.read_text()))
            continue
        cfg = config.load(HERE / f"{name}.toml", [f"train.seed={seed}"])
        summaries.append(train.train(cfg, out, progress=progress).summary)
    losses = np.array([s["normalized_loss"] for s in summaries])
    cfg = summaries[0]["config"]
    return {
        "name": name,
        "gauge": cfg["physics"]["gauge"],
        "hamiltonian": cfg["physics"]["hamiltonian"],
        "field": cfg["field"]["kind"],
        "width": cfg["field"]["width"],
        "steps": cfg["train"]["steps"],
        "seeds": seeds,
        "normalized_loss_mean": float(losses.mean()),
        "normalized_loss_stderr": float(losses.std(ddof=1) / np.sqrt(len(losses)))
        if len(losses) > 1
        else float("nan"),
        "within_run_stderr": float(np.mean([s["normalized_loss_stderr"] for s in summaries])),
        "per_state_mean": float(np.mean([s["per_state_normalized_loss"] for s in summaries])),
        "per_state_stderr": float(
            np.mean([s["per_state_normalized_loss_stderr"] for s in summaries])
        ),
        "per_seed": [float(x) for x in losses],
        "wall_time_s": float(np.mean([s["wall_time_s"] for s in summaries])),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| experiment | field | gauge | steps | width | held-out L(V)/L(0) (mean ± s.e., seeds) "
        "| within-run s.e. | per-state mean of L_rho(V)/L_rho(0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['field']} | {r['gauge']} | {r['steps']} | {r['width']} | "
            f"{r['normalized_loss_mean']:.4g} ± {r['normalized_loss_stderr']:.2g} "
            f"(n={len(r['seeds'])}) | {r['within_run_stderr']:.2g} "
            f"| {r['per_state_mean']:.4g} ± {r['per_state_stderr']:.2g} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = np.arange(len(rows))
    means = [max(r["normalized_loss_mean"], 1e-7) for r in rows]
    errs = [r["normalized_loss_stderr"] for r in rows]
    colors = ["tab:green" if r["hamiltonian"] == "noninteracting" else "tab:red" for r in rows]
    ax.barh(y, means, xerr=errs, color=colors, alpha=0.8, capsize=3)
    for yi, r in zip(y, rows, strict=True):
        ax.plot(r["per_seed"], [yi] * len(r["per_seed"]), "k.", ms=4)
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("held-out L(V) / L(0)  (dots: seeds)")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_title("noninteracting control (green) vs Heisenberg (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paste_into_readme(readme: Path, text: str) -> None:
    body = readme.read_text()
    block = f"<!-- results:start -->\n{text}\n<!-- results:end -->"
    pattern = re.compile(r"<!-- results:start -->.*?<!-- results:end -->", re.S)
    if not pattern.search(body):
        sys.exit(f"{readme} has no <!-- results:start --> ... <!-- results:end --> markers")
    readme.write_text(pattern.sub(lambda _: block, body))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", help="run only these experiments")
    p.add_argument("--readme", default=str(HERE.parent / "README.md"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    names = args.only or ORDER
    rows = [run(n, args.seeds, not args.quiet) for n in names]
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "search.json").write_text(json.dumps(rows, indent=2))
    md = table(rows)
    (results / "search.md").write_text(md + "\n")
    plot(rows, results / "search.png")
    print(md)
    if not args.only:
        figure = "![search results](experiments/results/search.png)"
        paste_into_readme(Path(args.readme), f"{md}\n\n{figure}")


if __name__ == "__main__":
    main()
