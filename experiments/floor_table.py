"""The least-squares floor of L(V)/L(0) against the basis degree K, for both gauges.

    python experiments/floor_table.py [--max-degree 3] [--batches 8] [--states 32]
                                      [--points 256] [--invariant-max-degree 6]

For the Heisenberg and the noninteracting Hamiltonian (the config defaults, visibility
0.2) and the svd and linear gauges, fits the state-independent field of degree <= K
(`lhvjax.floor.HarmonicBasis`, K = 1..max-degree) on `batches` training grids of
states x points, and evaluates it on the held-out grid of the default eval config
(eval.states x eval.points from eval.seed: the same grid the neural runs of
experiments/*.toml are evaluated on). For Heisenberg it also fits the rotation-equivariant
basis (`InvariantBasis`, K = 2, 4, ...), whose population floor equals the full basis's at
the same K, to show where the floor settles.

Writes experiments/results/floor.json (one row per fit), floor.md (the table) and
floor.png (floor against K: held-out with error bars, train dashed; neural plateaus from
experiments/results/search.json, if present, as horizontal bands). Peak memory is the
process's high-water mark (getrusage) after each fit, so it only grows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HAMILTONIANS = ("heisenberg", "noninteracting")
GAUGES = ("svd", "linear")
KEEP = (
    "name",
    "hamiltonian",
    "gauge",
    "basis",
    "degree",
    "basis_size",
    "rank",
    "normalized_loss",
    "normalized_loss_stderr",
    "train_normalized_loss",
    "train_normalized_loss_stderr",
    "per_state_normalized_loss",
    "per_state_normalized_loss_stderr",
    "heldout_loss_zero_field",
    "heldout_max_state_share_of_L0",
    "samples",
    "samples_per_unknown",
    "eigenvalue_cutoff_relative",
    "eigenvalue_cutoff",
    "eigenvalue_min",
    "eigenvalue_max",
    "wall_time_s",
    "time_fit_s",
    "peak_memory_mb",
    "design_matrix_mb",
)


def fit(hamiltonian, gauge, degree, basis, args) -> dict:
    from lhvjax import config, floor

    cfg = config.load(
        None,
        [
            f"name=floor_{hamiltonian}_{gauge}",
            f"physics.hamiltonian={hamiltonian}",
            f"physics.gauge={gauge}",
            f"train.states={args.states}",
            f"train.points={args.points}",
        ],
    )
    r = floor.run_floor(cfg, degree, batches=args.batches, basis=basis)
    row = {k: r[k] for k in KEEP}
    row["visibility"] = cfg.physics.visibility
    print(
        f"{hamiltonian:>14} {gauge:>6} {basis:>9} K={degree} n={r['basis_size']:4d}: "
        f"held-out {r['normalized_loss']:.4g} +- {r['normalized_loss_stderr']:.2g}, "
        f"train {r['train_normalized_loss']:.4g}  [{r['wall_time_s']:.1f} s, "
        f"peak {r['peak_memory_mb']:.0f} MiB, A {r['design_matrix_mb']:.1f} MiB]",
        flush=True,
    )
    return row


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Least-squares floor of L(V)/L(0) (visibility {rows[0]['visibility']}, float64). "
        f"Training: {args.batches} grids of {args.states} states x {args.points} points; "
        f"held-out: {rows[0]['samples']['heldout']['states']} states x "
        f"{rows[0]['samples']['heldout']['points']} points (eval.seed). "
        f"Relative eigenvalue cut-off {rows[0]['eigenvalue_cutoff_relative']:g}.",
        "",
        "| Hamiltonian | gauge | basis | K | basis size | rank | train L/L0 (± s.e.) "
        "| held-out L/L0 (± s.e.) | time (s) | peak mem (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['hamiltonian']} | {r['gauge']} | {r['basis']} | {r['degree']} | "
            f"{r['basis_size']} | {r['rank']} | {r['train_normalized_loss']:.4g} ± "
            f"{r['train_normalized_loss_stderr']:.2g} | {r['normalized_loss']:.4g} ± "
            f"{r['normalized_loss_stderr']:.2g} | {r['wall_time_s']:.1f} | "
            f"{r['peak_memory_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def neural_rows(path: Path) -> list[dict]:
    """State-independent neural runs from run_all.py's search.json (a list of rows)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    rows = data.get("rows", []) if isinstance(data, dict) else data
    out = []
    for r in rows:
        name = str(r.get("name", ""))
        if "state_dependent" in name or "time_dependent" in name:
            continue
        if not all(k in r for k in ("normalized_loss_mean", "normalized_loss_stderr")):
            continue
        out.append(r)
    return out


def plot(rows: list[dict], neural: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    colors = {"harmonic": "C0", "invariant": "C3"}
    for i, ham in enumerate(HAMILTONIANS):
        for j, gauge in enumerate(GAUGES):
            ax = axes[i, j]
            for basis, color in colors.items():
                sel = [
                    r
                    for r in rows
                    if r["hamiltonian"] == ham and r["gauge"] == gauge and r["basis"] == basis
                ]
                if not sel:
                    continue
                K = np.array([r["degree"] for r in sel])
                q = np.array([r["normalized_loss"] for r in sel])
                se = np.array([r["normalized_loss_stderr"] for r in sel])
                tr = np.array([r["train_normalized_loss"] for r in sel])
                if ham == "noninteracting":  # rounding level: log scale, clip at 1e-32
                    q, tr = np.maximum(q, 1e-32), np.maximum(tr, 1e-32)
                ax.errorbar(
                    K,
                    q,
                    yerr=se,
                    color=color,
                    marker="o",
                    capsize=3,
                    label=f"{basis} basis, held-out",
                )
                ax.plot(K, tr, color=color, ls="--", marker=".", label=f"{basis} basis, train")
            if ham == "noninteracting":
                ax.set_yscale("log")
            else:
                ax.axhline(1.0, color="grey", lw=0.8, ls=":")
                for k, r in enumerate(x for x in neural if f"heisenberg_{gauge}" in x["name"]):
                    m, s = r["normalized_loss_mean"], r["normalized_loss_stderr"]
                    s = s if np.isfinite(s) else r.get("within_run_stderr", 0.0)
                    c = f"C{(k + 4) % 10}"
                    ax.axhspan(m - s, m + s, color=c, alpha=0.25)
                    ax.axhline(m, color=c, lw=1, label=f"neural: {r['name']}")
            ax.set_title(f"{ham}, {gauge} gauge")
            ax.set_ylabel("L(V*) / L(0)")
            ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("basis degree K")
    fig.suptitle("Least-squares floor over state-independent fields of degree <= K")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-degree", type=int, default=3)
    p.add_argument("--invariant-max-degree", type=int, default=6)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--states", type=int, default=32, help="train states per grid")
    p.add_argument("--points", type=int, default=256, help="train points per grid")
    args = p.parse_args()

    t0 = time.perf_counter()
    rows = []
    for ham in HAMILTONIANS:
        for gauge in GAUGES:
            for K in range(1, args.max_degree + 1):
                rows.append(fit(ham, gauge, K, "harmonic", args))
            if ham == "heisenberg":
                for K in range(2, args.invariant_max_degree + 1, 2):
                    rows.append(fit(ham, gauge, K, "invariant", args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "floor.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / "floor.md").write_text(markdown(rows, args))
    neural = neural_rows(RESULTS / "search.json")
    print(
        f"neural plateaus from search.json: {len(neural)} rows"
        if neural
        else "no experiments/results/search.json: no neural plateaus drawn"
    )
    plot(rows, neural, RESULTS / "floor.png")
    print(
        f"wrote {RESULTS / 'floor.json'}, floor.md, floor.png in {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
