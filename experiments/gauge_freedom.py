"""Gauge freedom (issue 7): every formulation on Heisenberg against the noninteracting control.

    python experiments/gauge_freedom.py [--seeds 0 1] [--quick] [--readme README.md]

Three studies, all at v = 0.2, svd base gauge, a state-independent field (width 64, depth 3):

* main: strong, weak (full and odd test functions, L = 3), Lagrangian (odd moments, L = 3,
  exact samples moved over [0, 2]) and the learned gauge (strong form, free moments of
  degree <= 2), each for Heisenberg and for the noninteracting control, over seeds;
* degree: Heisenberg, the held-out loss against L (test-function, moment or gauge degree);
* budget: Heisenberg, the held-out loss against the number of training steps.

Runs go to experiments/runs/gauge_freedom/LABEL/seed_S (finished runs are reused,
interrupted ones resume). Every figure is the held-out L(V)/L(0) of its formulation with
its standard error; over seeds, the mean and the standard error of the mean. Output:
experiments/results/gauge_freedom.{json,md,png}, pasted into the README between the
`gauge:start` / `gauge:end` markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BASE = {"heisenberg": "heisenberg_svd.toml", "noninteracting": "free_svd.toml"}
STEPS = 1000
LAGRANGIAN = [
    "physics.formulation=lagrangian",
    "lagrangian.t_max=2.0",
    "lagrangian.times=4",
    "lagrangian.steps=4",
    "train.states=8",
    "train.points=128",
    "eval.times=4",
    "eval.states=64",
    "eval.points=4096",  # 256 states x 4096 moved samples: forward only, ~10 s
]
# the weak form's held-out flux is a Monte Carlo mean: at 2048 points its s.e. was ~0.05 of
# L(0) for the noninteracting control; 8192 (forward only, ~1 s) brings it near 0.01
WEAK = ["physics.formulation=weak", "eval.points=8192"]
FORMULATIONS = {  # label -> (overrides, name of its degree key)
    "strong": ([], None),
    "weak, full": (WEAK, "weak.degree"),
    "weak, odd": ([*WEAK, "weak.tests=odd"], "weak.degree"),
    "Lagrangian": (LAGRANGIAN, "lagrangian.degree"),
    "learned gauge": (["physics.gauge=learned"], "learned_gauge.degree"),
}
DEGREES = {
    "weak, full": [1, 2, 3, 4],
    "weak, odd": [1, 3, 5],
    "Lagrangian": [3, 5],  # ~5 min a run on 2 CPU cores
    "learned gauge": [2, 3, 4],
}
DEFAULT_DEGREE = {"weak, full": 3, "weak, odd": 3, "Lagrangian": 3, "learned gauge": 2}
BUDGETS = {form: [250, 1000, 4000] for form in FORMULATIONS}
BUDGETS["learned gauge"] = [250, 1000, 2000]  # ~0.1 s a step on 2 CPU cores
BUDGETS["Lagrangian"] = [250, 1000, 3000]  # ~0.2 s a step
# the Lagrangian control had not converged at 1000 steps (L/L0 ~ 0.1): its budget too
CONTROL_BUDGETS = {"Lagrangian": [250, 1000, 3000]}
QUICK = ["eval.times=2", "eval.states=16", "eval.points=256"]  # and steps / 25


def _slug(*parts) -> str:
    return re.sub(r"[^a-z0-9]+", "_", "_".join(str(p) for p in parts).lower()).strip("_")


def run_one(form, hamiltonian, seed, degree=None, steps=STEPS, quick=False, progress=True):
    """Train one configuration (or reuse its finished run) and return its summary."""
    from lhvjax import config, train

    overrides, degree_key = FORMULATIONS[form]
    if quick:
        steps = steps // 25
    overrides = [*overrides, f"train.steps={steps}", f"train.seed={seed}"]
    if degree is not None:
        overrides.append(f"{degree_key}={degree}")
    if quick:
        overrides += QUICK
    name = _slug(hamiltonian, form, f"L{degree}" if degree else "", f"{steps}steps")
    out = HERE / "runs" / "gauge_freedom" / ("quick_" if quick else "") / name / f"seed_{seed}"
    if (out / "summary.json").exists():
        return json.loads((out / "summary.json").read_text())
    cfg = config.load(HERE / BASE[hamiltonian], [f"name={name}", *overrides])
    return train.train(cfg, out, progress=progress).summary


def aggregate(summaries: list[dict]) -> dict:
    q = np.array([s["normalized_loss"] for s in summaries])
    out = {
        "normalized_loss_mean": float(q.mean()),
        "normalized_loss_stderr": float(q.std(ddof=1) / np.sqrt(len(q))) if len(q) > 1 else None,
        "within_run_stderr": float(np.mean([s["normalized_loss_stderr"] for s in summaries])),
        "per_seed": [float(x) for x in q],
        "wall_time_s": float(np.mean([s["wall_time_s"] for s in summaries])),
    }
    for extra in ("sign_normalized_loss", "normalized_loss_vs_base"):
        if extra in summaries[0]:
            out[extra] = float(np.mean([s[extra] for s in summaries]))
    return out


def _fmt(r: dict) -> str:
    se = r["normalized_loss_stderr"]
    se = r["within_run_stderr"] if se is None else se
    return f"{r['normalized_loss_mean']:.3g} ± {se:.2g}"


def tables(res: dict) -> str:
    lines = [
        f"Held-out L(V)/L(0), mean ± s.e. over seeds {res['seeds']} ({STEPS} steps; the "
        "within-run held-out s.e. in brackets):",
        "",
        "| formulation | what is matched | Heisenberg | noninteracting |",
        "|---|---|---|---|",
    ]
    what = {
        "strong": "the svd density, pointwise",
        "weak, full": "all moments of degree <= 3 (svd gauge)",
        "weak, odd": "the Bell-visible moments of degree <= 3",
        "Lagrangian": "odd moments <= 3 of moved samples at 4 times",
        "learned gauge": "a learned density (svd + free moments <= 2), pointwise",
    }
    for form in FORMULATIONS:
        h, f = res["main"][form]["heisenberg"], res["main"][form]["noninteracting"]
        lines.append(
            f"| {form} | {what[form]} | {_fmt(h)} ({h['within_run_stderr']:.2g}) "
            f"| {_fmt(f)} ({f['within_run_stderr']:.2g}) |"
        )
    extra = res["main"]["Lagrangian"]["heisenberg"].get("sign_normalized_loss")
    if extra is not None:
        lines += [
            "",
            f"Lagrangian, Heisenberg: the sign statistics themselves (16 random direction pairs, "
            f"4 times) give {extra:.3g} of the zero field's squared error; noninteracting: "
            f"{res['main']['Lagrangian']['noninteracting']['sign_normalized_loss']:.3g}.",
        ]
    lines += ["", "Heisenberg against the degree L (seed 0):", ""]
    lines += ["| formulation | " + " | ".join(f"L={d}" for d in range(1, 6)) + " |"]
    lines += ["|---|" + "---|" * 5]
    for form, rows in res["degree"].items():
        cells = {r["degree"]: f"{r['normalized_loss']:.3g} ± {r['stderr']:.2g}" for r in rows}
        lines.append(f"| {form} | " + " | ".join(cells.get(d, "") for d in range(1, 6)) + " |")
    lines += ["", "Against the training budget (seed 0; Heisenberg unless marked):", ""]
    budgets = sorted({b for bs in BUDGETS.values() for b in bs})
    lines += ["| formulation | " + " | ".join(f"{b} steps" for b in budgets) + " |"]
    lines += ["|---|" + "---|" * len(budgets)]
    for form, rows in res["budget"].items():
        cells = {r["steps"]: f"{r['normalized_loss']:.3g} ± {r['stderr']:.2g}" for r in rows}
        lines.append(f"| {form} | " + " | ".join(cells.get(b, "") for b in budgets) + " |")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    forms = list(FORMULATIONS)
    x = np.arange(len(forms))
    for k, (ham, color) in enumerate((("heisenberg", "C3"), ("noninteracting", "C0"))):
        rows = [res["main"][f][ham] for f in forms]
        m = np.array([r["normalized_loss_mean"] for r in rows])
        se = np.array(
            [
                r["normalized_loss_stderr"]
                if r["normalized_loss_stderr"] is not None
                else r["within_run_stderr"]
                for r in rows
            ]
        )
        ax.bar(x + (k - 0.5) * 0.38, np.abs(m), 0.38, yerr=se, color=color, label=ham, capsize=3)
    ax.set_yscale("log")
    ax.set_xticks(x, forms, rotation=20, ha="right")
    ax.set_ylabel("held-out L(V) / L(0)")
    ax.set_title(f"each formulation, {STEPS} steps, seeds {res['seeds']}")
    ax.axhline(1, color="k", lw=0.8, ls=":")
    ax.legend()
    for ax, key, xlabel in (
        (axes[1], "degree", "degree L"),
        (axes[2], "budget", "training steps"),
    ):
        for form, rows in res[key].items():
            xs = [r["degree" if key == "degree" else "steps"] for r in rows]
            color = f"C{forms.index(form)}" if form in forms else "C5"  # same form, same colour
            ax.errorbar(
                xs,
                [r["normalized_loss"] for r in rows],
                yerr=[r["stderr"] for r in rows],
                marker="o",
                capsize=3,
                color=color,
                ls="--" if "noninteracting" in form else "-",
                label=form,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out L(V) / L(0)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    steps = sorted({r["steps"] for rows in res["budget"].values() for r in rows})
    axes[2].set_xticks(steps, [str(b) for b in steps])
    axes[2].minorticks_off()
    axes[1].set_title("against the degree")
    axes[2].set_title("against the training budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paste(readme: Path, text: str) -> None:
    start, end = "<!-- gauge:start -->", "<!-- gauge:end -->"
    src = readme.read_text()
    if start not in src or end not in src:
        print(f"{readme} has no {start} / {end} markers; not pasted", file=sys.stderr)
        return
    head, rest = src.split(start, 1)
    readme.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--quick", action="store_true", help="1/25 of the steps on small grids: a smoke test"
    )
    ap.add_argument("--only", choices=("main", "degree", "budget"), nargs="+")
    ap.add_argument("--readme", type=Path, default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    kw = {"quick": args.quick, "progress": not args.no_progress}
    studies = args.only or ["main", "degree", "budget"]
    res: dict = {"seeds": args.seeds, "steps": STEPS, "main": {}, "degree": {}, "budget": {}}
    if "main" in studies:
        for form in FORMULATIONS:
            res["main"][form] = {
                ham: aggregate([run_one(form, ham, s, **kw) for s in args.seeds]) for ham in BASE
            }
    if "degree" in studies:
        for form, degrees in DEGREES.items():
            rows = []
            for d in degrees:
                deg = None if d == DEFAULT_DEGREE[form] else d  # the main run's directory
                s = run_one(form, "heisenberg", args.seeds[0], deg, **kw)
                rows.append(
                    {
                        "degree": d,
                        "normalized_loss": s["normalized_loss"],
                        "stderr": s["normalized_loss_stderr"],
                    }
                )
            res["degree"][form] = rows
    if "budget" in studies:

        def budget_rows(form, hamiltonian, budgets):
            rows = []
            for b in budgets:
                s = run_one(form, hamiltonian, args.seeds[0], steps=b, **kw)
                rows.append(
                    {
                        "steps": b,
                        "normalized_loss": s["normalized_loss"],
                        "stderr": s["normalized_loss_stderr"],
                    }
                )
            return rows

        for form in FORMULATIONS:
            res["budget"][form] = budget_rows(form, "heisenberg", BUDGETS[form])
        for form, budgets in CONTROL_BUDGETS.items():
            res["budget"][f"{form} (noninteracting)"] = budget_rows(form, "noninteracting", budgets)
    if not all(res[k] for k in ("main", "degree", "budget")):
        print(json.dumps(res, indent=1))
        return
    out = HERE / "results"
    stem = "gauge_freedom_quick" if args.quick else "gauge_freedom"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    text = tables(res)
    (out / f"{stem}.md").write_text(text + "\n")
    plot(res, out / f"{stem}.png")
    print(text)
    if args.readme is not None and not args.quick:
        paste(args.readme, text + f"\n\n![gauge freedom](experiments/results/{stem}.png)")


if __name__ == "__main__":
    main()
