"""The least-squares floor of L(V)/L(0) against the basis degree K, for both gauges.

    python experiments/floor_table.py [--max-degree 3] [--batches 8] [--states 32]
                                      [--points 256] [--invariant-max-degree 6]
                                      [--per-state-max-degree 4] [--per-state-states 32]
                                      [--per-state-points 4096]

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
experiments/results/search.json, if present, as horizontal bands: state-independent runs
solid, state-dependent ones dash-dotted; per-state reference in green). Peak memory is the
process's high-water mark (getrusage) after each fit, so it only grows.
"""

from __future__ import annotations

import argparse
import json
import math
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
KEEP_PER_STATE = (
    "kind",
    "name",
    "hamiltonian",
    "gauge",
    "basis",
    "degree",
    "basis_size",
    "rank_min",
    "rank_max",
    "normalized_loss",
    "normalized_loss_stderr",
    "train_normalized_loss",
    "train_normalized_loss_stderr",
    "per_state_normalized_loss",
    "per_state_normalized_loss_stderr",
    "per_state_normalized_loss_median",
    "train_per_state_normalized_loss",
    "heldout_loss_zero_field",
    "heldout_max_state_share_of_L0",
    "check_max_abs_diff_relative",
    "samples",
    "samples_per_unknown",
    "eigenvalue_cutoff_relative",
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
    row = {"kind": r["kind"], **{k: r[k] for k in KEEP}}
    row["visibility"] = cfg.physics.visibility
    print(
        f"{hamiltonian:>14} {gauge:>6} {basis:>9} K={degree} n={r['basis_size']:4d}: "
        f"held-out {r['normalized_loss']:.4g} +- {r['normalized_loss_stderr']:.2g}, "
        f"train {r['train_normalized_loss']:.4g}  [{r['wall_time_s']:.1f} s, "
        f"peak {r['peak_memory_mb']:.0f} MiB, A {r['design_matrix_mb']:.1f} MiB]",
        flush=True,
    )
    return row


def per_state_fit_points(degree: int, points: int) -> int:
    """max(points, the power of two >= 15 x basis size): 4096 up to K = 3, 8192 at K = 4."""
    from lhvjax import floor

    return max(points, 1 << math.ceil(math.log2(15 * floor.basis_size(degree))))


def fit_per_state(hamiltonian, gauge, degree, args) -> dict:
    from lhvjax import config, floor

    cfg = config.load(
        None,
        [
            f"name=floor_{hamiltonian}_{gauge}",
            f"physics.hamiltonian={hamiltonian}",
            f"physics.gauge={gauge}",
        ],
    )
    n_fit = per_state_fit_points(degree, args.per_state_points)
    r = floor.per_state_floor(
        cfg, degree, args.per_state_states, n_fit, args.per_state_points, chunk=8
    )
    row = {k: r[k] for k in KEEP_PER_STATE}
    row["visibility"] = cfg.physics.visibility
    print(
        f"{hamiltonian:>14} {gauge:>6} per-state K={degree} n={r['basis_size']:4d}: "
        f"held-out {r['normalized_loss']:.4g} +- {r['normalized_loss_stderr']:.2g} "
        f"(mean over states {r['per_state_normalized_loss']:.4g}), "
        f"train {r['train_normalized_loss']:.4g}  [{r['wall_time_s']:.1f} s, "
        f"{r['samples']['states']} states x {n_fit} fit points, "
        f"peak {r['peak_memory_mb']:.0f} MiB]",
        flush=True,
    )
    return row


def _per_state_lookup(rows: list[dict]) -> dict:
    return {
        (r["hamiltonian"], r["gauge"], r["degree"]): r for r in rows if r.get("kind") == "per_state"
    }


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Least-squares floor of L(V)/L(0) (visibility {rows[0]['visibility']}, float64). "
        f"Training: {args.batches} grids of {args.states} states x {args.points} points; "
        f"held-out: {rows[0]['samples']['heldout']['states']} states x "
        f"{rows[0]['samples']['heldout']['points']} points (eval.seed). "
        f"Relative eigenvalue cut-off {rows[0]['eigenvalue_cutoff_relative']:g}.",
        "",
        "| Hamiltonian | gauge | basis | K | basis size | rank | train L/L0 (± s.e.) "
        "| held-out L/L0 (± s.e.) | per-state held-out L/L0 (± s.e.) | time (s) "
        "| peak mem (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per = _per_state_lookup(rows)
    for r in rows:
        if r.get("kind") == "per_state":
            continue
        p = per.get((r["hamiltonian"], r["gauge"], r["degree"]))
        col = (
            f"{p['normalized_loss']:.4g} ± {p['normalized_loss_stderr']:.2g}"
            if p is not None and r["basis"] == "harmonic"
            else "–"
        )
        lines.append(
            f"| {r['hamiltonian']} | {r['gauge']} | {r['basis']} | {r['degree']} | "
            f"{r['basis_size']} | {r['rank']} | {r['train_normalized_loss']:.4g} ± "
            f"{r['train_normalized_loss_stderr']:.2g} | {r['normalized_loss']:.4g} ± "
            f"{r['normalized_loss_stderr']:.2g} | {col} | {r['wall_time_s']:.1f} | "
            f"{r['peak_memory_mb']:.0f} |"
        )
    if per:
        first = next(iter(per.values()))
        lines += [
            "",
            f"Per-state reference (a state-dependent field): the harmonic basis fitted to each "
            f"of the first {first['samples']['states']} held-out states (eval.seed) alone, "
            f"on its own fit points, evaluated on {first['samples']['eval_points']} other "
            "points. Pooled: sum L_rho(V_rho) / sum L_rho(0) (crossed s.e.); mean: the mean "
            "over states of L_rho(V_rho) / L_rho(0).",
            "",
            "| Hamiltonian | gauge | K | basis size | fit points | train pooled | held-out "
            "pooled (± s.e.) | held-out mean over states (± s.e.) | largest state's share "
            "of L(0) | time (s) | peak mem (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in per.values():
            lines.append(
                f"| {r['hamiltonian']} | {r['gauge']} | {r['degree']} | {r['basis_size']} | "
                f"{r['samples']['fit_points']} | {r['train_normalized_loss']:.4g} | "
                f"{r['normalized_loss']:.4g} ± {r['normalized_loss_stderr']:.2g} | "
                f"{r['per_state_normalized_loss']:.4g} ± "
                f"{r['per_state_normalized_loss_stderr']:.2g} | "
                f"{r['heldout_max_state_share_of_L0']:.2g} | {r['wall_time_s']:.1f} | "
                f"{r['peak_memory_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def neural_rows(path: Path) -> list[dict]:
    """Neural runs from run_all.py's search.json (a list of rows): state-independent and
    state-dependent ones (time-dependent runs are left out)."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    rows = data.get("rows", []) if isinstance(data, dict) else data
    out = []
    for r in rows:
        name = str(r.get("name", ""))
        if "time_dependent" in name:
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
                    if r["hamiltonian"] == ham
                    and r["gauge"] == gauge
                    and r["basis"] == basis
                    and r.get("kind") != "per_state"
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
            per = [
                r
                for r in rows
                if r.get("kind") == "per_state" and r["hamiltonian"] == ham and r["gauge"] == gauge
            ]
            if per:
                K = np.array([r["degree"] for r in per])
                ax.errorbar(
                    K,
                    [r["normalized_loss"] for r in per],
                    yerr=[r["normalized_loss_stderr"] for r in per],
                    color="C2",
                    marker="s",
                    capsize=3,
                    label=f"per state ({per[0]['samples']['states']} states), held-out",
                )
                ax.plot(
                    K,
                    [r["train_normalized_loss"] for r in per],
                    color="C2",
                    ls="--",
                    marker=".",
                    label="per state, train",
                )
            if ham == "noninteracting" or per:
                ax.set_yscale("log")
            if ham != "noninteracting":
                ax.axhline(1.0, color="grey", lw=0.8, ls=":")
                for k, r in enumerate(x for x in neural if f"heisenberg_{gauge}" in x["name"]):
                    m, s = r["normalized_loss_mean"], r["normalized_loss_stderr"]
                    s = s if np.isfinite(s) else r.get("within_run_stderr", 0.0)
                    c = f"C{(k + 4) % 10}"
                    ls = "-." if "state_dependent" in r["name"] else "-"
                    ax.axhspan(m - s, m + s, color=c, alpha=0.25)
                    ax.axhline(m, color=c, lw=1, ls=ls, label=f"neural: {r['name']}")
            ax.set_title(f"{ham}, {gauge} gauge")
            ax.set_ylabel("L(V*) / L(0)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("basis degree K")
    fig.suptitle("Least-squares floor over fields of degree <= K: state-independent, and per state")
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
    p.add_argument(
        "--per-state-max-degree",
        type=int,
        default=4,
        help="per-state reference up to this K (Heisenberg; 0: none)",
    )
    p.add_argument("--per-state-states", type=int, default=32, help="held-out states fitted")
    p.add_argument(
        "--per-state-points",
        type=int,
        default=4096,
        help="evaluation points per state (fit points: at least this many)",
    )
    p.add_argument(
        "--hamiltonians",
        nargs="+",
        default=list(HAMILTONIANS),
        choices=HAMILTONIANS,
        help="restrict the table (a quick check)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    args = p.parse_args()

    t0 = time.perf_counter()
    rows = []
    for ham in args.hamiltonians:
        for gauge in GAUGES:
            for K in range(1, args.max_degree + 1):
                rows.append(fit(ham, gauge, K, "harmonic", args))
            if ham == "heisenberg":
                for K in range(2, args.invariant_max_degree + 1, 2):
                    rows.append(fit(ham, gauge, K, "invariant", args))
                for K in range(1, args.per_state_max_degree + 1):
                    rows.append(fit_per_state(ham, gauge, K, args))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "floor.json").write_text(json.dumps(rows, indent=2))
    (out / "floor.md").write_text(markdown(rows, args))
    neural = neural_rows(RESULTS / "search.json")
    print(
        f"neural plateaus from search.json: {len(neural)} rows"
        if neural
        else "no experiments/results/search.json: no neural plateaus drawn"
    )
    plot(rows, neural, out / "floor.png")
    print(f"wrote {out / 'floor.json'}, floor.md, floor.png in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
