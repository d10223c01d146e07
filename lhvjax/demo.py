"""`lhvjax demo`: the canonical comparison, sized for a laptop CPU (a few minutes).

The same runs as experiments/*.toml with fewer steps: the noninteracting control in
both gauges, Heisenberg with a state-independent field in both gauges, a time-dependent
field, and the state-dependent control. Prints a table of held-out L(V)/L(0) with
standard errors and draws every loss curve in one figure.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEMO_RUNS", "run_demo", "format_table"]

# name -> overrides on the default config
DEMO_RUNS: dict[str, list[str]] = {
    "free_svd": ["physics.hamiltonian=noninteracting", "physics.gauge=svd"],
    "free_linear": ["physics.hamiltonian=noninteracting", "physics.gauge=linear"],
    "heisenberg_svd": ["physics.gauge=svd"],
    "heisenberg_linear": ["physics.gauge=linear"],
    "heisenberg_svd_time_dependent": ["physics.gauge=svd", "field.kind=time_dependent"],
    "heisenberg_linear_state_dependent": ["physics.gauge=linear", "field.kind=state_dependent"],
}

_COMMON = ["train.steps=1500", "train.eval_every=250", "eval.points=1024", "eval.states=128"]


def format_table(rows: list[dict]) -> str:
    lines = [
        "| run | held-out L(V)/L(0) | stderr | per-state mean | stderr | steps | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        lines.append(
            f"| {s['name']} | {s['normalized_loss']:.4g} | {s['normalized_loss_stderr']:.2g} "
            f"| {s['per_state_normalized_loss']:.4g} | {s['per_state_normalized_loss_stderr']:.2g} "
            f"| {s['steps']} | {s['wall_time_s']:.0f} |"
        )
    return "\n".join(lines)


def run_demo(out: Path, progress: bool = True) -> list[dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lhvjax import config, train

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, overrides in DEMO_RUNS.items():
        cfg = config.load(None, [f"name={name}", *_COMMON, *overrides])
        result = train.train(cfg, out / name, progress=progress, resume=False)
        rows.append(result.summary)
        history = train._read_metrics(out / name / "metrics.jsonl")
        train.plot_history(history, out / name / "loss.png", title=name, ax=ax)
    ax.set_title("held-out L(V)/L(0): noninteracting control vs Heisenberg")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)
    table = format_table(rows)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(table)
    print(f"\nfigure: {out / 'loss_curves.png'}")
    return rows
