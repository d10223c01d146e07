"""Three qubits whose coupling graph changes in time: local against nonlocal fields.

    python experiments/n_qubits.py [--quick] [--seeds 3] [--steps 1000] [--skip-plain-mlp]

H(t) switches a Heisenberg coupling between qubits 1-2 on for t in [0, 1) and one between
2-3 for t in [1, 2); the control has the same schedule shape with local fields instead
(qubits 1, 2 precess during [0, 1), qubits 2, 3 during [1, 2)), so Theorem 1's rotation
field solves it exactly. States: rho0 from S_v (Hilbert-Schmidt sigma, v = 0.08 below the
3-qubit linear gauge's v* = 1/10) evolved to t ~ U[0, 2]; time-dependent fields V(lambda, t)
are trained on the strong residual (lhvjax.local.train_field) and scored on a held-out grid
drawn from a key no training step uses. Rows: the local (message-passing) field, the
nonlocal field (local part + one network of all three points), the plain one-network
baseline (no local part), the control, and the known fields (zero: 1 by definition;
the exact rotation field on the control).

Writes experiments/results/n_qubits.json, n_qubits.md and n_qubits.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from lhvjax import local
from lhvjax import nqubits as nq
from lhvjax.residual import ratio_with_stderr

HERE = Path(__file__).resolve().parent
VISIBILITY = 0.08
T_MAX = 2.0


def hamiltonians() -> dict[str, nq.Hamiltonian]:
    interacting = nq.schedule(3, [(0.0, 1.0, (0, 1), 1.0), (1.0, 2.0, (1, 2), 1.0)])
    control = nq.Hamiltonian(
        3,
        zeeman=(
            nq.Zeeman(0, 1.0, (0, 0, 1), 0.0, 1.0),
            nq.Zeeman(1, 0.8, (1, 0, 0), 0.0, 1.0),
            nq.Zeeman(1, 1.0, (0, 1, 0), 1.0, 2.0),
            nq.Zeeman(2, 0.6, (1, 1, 0), 1.0, 2.0),
        ),
    )
    return {"interacting": interacting, "control": control}


def build_field(kind: str, H: nq.Hamiltonian, width: int):
    if kind == "local":
        return local.LocalField(3, H.pairs, width=width)
    if kind == "nonlocal":
        return local.NonlocalField(3, width=2 * width, local_width=width)
    if kind == "plain_mlp":
        return local.NonlocalField(3, width=2 * width, depth=3, local_part=False)
    raise ValueError(kind)


def paired_difference(problem, batch, field_a, params_a, field_b, params_b) -> dict:
    """L_a/L(0) - L_b/L(0) on one held-out grid, with the crossed s.e. of the difference.

    Both fields see the same states and points, so the grid's sampling noise (~0.0085 in
    each figure) cancels in the per-cell difference r_a^2 - r_b^2.
    """

    ra, d2 = nq.squared_residuals(problem, field_a, params_a, batch)
    rb, _ = nq.squared_residuals(problem, field_b, params_b, batch)
    q, se = ratio_with_stderr(ra - rb, d2)
    return {"difference": float(q), "stderr": float(se)}


def over_seeds(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny version (about a minute)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--skip-plain-mlp", action="store_true", help="leave out the one-MLP baseline")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    steps, seeds, width = args.steps, args.seeds, args.width
    batch = {"times": 4, "states": 16, "points": 128}
    ev = {"times": 8, "states": 32, "points": 512}
    if args.quick:
        steps, seeds, width = 60, 2, 8
        batch = {"times": 2, "states": 8, "points": 32}
        ev = {"times": 2, "states": 8, "points": 64}

    t0 = time.perf_counter()
    Hs = hamiltonians()
    problems = {k: nq.Problem(H, VISIBILITY, t_max=T_MAX) for k, H in Hs.items()}
    eval_key = jax.random.key(1_000_003)  # never used by a training step
    held = {k: local.held_out(pr, eval_key, **ev) for k, pr in problems.items()}
    runs = [("interacting", "local"), ("interacting", "nonlocal"), ("control", "local")]
    if not args.skip_plain_mlp:
        runs.insert(2, ("interacting", "plain_mlp"))

    rows, histories, trained = [], {}, {}
    for ham, kind in runs:
        field = build_field(kind, Hs[ham], width)
        per_seed = []
        for seed in range(seeds):
            name = f"{ham}/{kind}/seed{seed}"
            out = local.train_field(
                problems[ham],
                field,
                seed=seed,
                steps=steps,
                lr=args.lr,
                warmup=min(50, steps // 5),
                eval_batch=held[ham],
                eval_every=max(steps // 5, 1),
                log_every=max(steps // 50, 1),
                progress=True,
                name=name,
                **batch,
            )
            per_seed.append({"seed": seed, **out["final"], "wall_time_s": out["wall_time_s"]})
            histories[name] = out["history"]
            trained[(ham, kind, seed)] = (field, out["params"])
        mean, se = over_seeds([r["normalized_loss"] for r in per_seed])
        rows.append(
            {
                "hamiltonian": ham,
                "field": kind,
                "normalized_loss": mean,
                "seed_stderr": se,
                "within_run_stderr": float(
                    np.mean([r["normalized_loss_stderr"] for r in per_seed])
                ),
                "seeds": per_seed,
                "steps": steps,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "seeds"}), flush=True)

    for ham, known in (("interacting", local.zero_field()), ("control", local.rotation_field())):
        e = jax.jit(lambda b, f=known, h=ham: nq.normalized_loss(problems[h], f, {}, b))(held[ham])
        rows.append(
            {
                "hamiltonian": ham,
                "field": known.name,
                "normalized_loss": float(e["normalized_loss"]),
                "seed_stderr": 0.0,
                "within_run_stderr": float(e["normalized_loss_stderr"]),
                "seeds": [],
                "steps": 0,
            }
        )

    pairs = []
    for seed in range(seeds):
        nonlocal_, local_ = (trained[("interacting", kind, seed)] for kind in ("nonlocal", "local"))
        d = paired_difference(problems["interacting"], held["interacting"], *nonlocal_, *local_)
        pairs.append({"seed": seed, **d})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "n_qubits_quick" if args.quick else "n_qubits"
    meta = {
        "command": " ".join(["python experiments/n_qubits.py", *(argv or sys.argv[1:])]),
        "n_qubits": 3,
        "visibility": VISIBILITY,
        "v_star": problems["interacting"].gauge.visibility().value,
        "t_max": T_MAX,
        "schedule": "Heisenberg J=1: (1,2) on [0,1), (2,3) on [1,2); control: local fields",
        "steps": steps,
        "seeds": seeds,
        "width": width,
        "lr": args.lr,
        "batch": batch,
        "held_out": {**ev, "seed": 1_000_003},
        "dtype": str(jax.numpy.zeros(()).dtype),
        "device": str(jax.devices()[0]),
        "machine": platform.processor() or platform.machine(),
        "wall_time_s": time.perf_counter() - t0,
    }
    (out / f"{stem}.json").write_text(
        json.dumps(
            {"meta": meta, "rows": rows, "nonlocal_minus_local": pairs, "histories": histories},
            indent=2,
        )
    )
    lines = [
        f"3 qubits, linear gauge, v = {VISIBILITY} (v* = {meta['v_star']:.4g}), states evolved to "
        f"t ~ U[0, {T_MAX}]; {steps} steps, {seeds} seeds; held-out "
        f"{ev['times']}x{ev['states']} states x {ev['points']} points.",
        f"Command: `{meta['command']}`",
        "",
        "| H(t) | field | held-out L(V)/L(0) (mean ± s.e. over seeds) | within-run s.e. |",
        "|---|---|---|---|",
    ]
    for r in rows:
        spread = f" ± {r['seed_stderr']:.2g} (n={len(r['seeds'])})" if r["seeds"] else " (exact)"
        lines.append(
            f"| {r['hamiltonian']} | {r['field']} | {r['normalized_loss']:.4g}{spread} "
            f"| {r['within_run_stderr']:.2g} |"
        )
    lines += [
        "",
        "Nonlocal minus local on the same held-out grid (paired, so the grid's own noise "
        "cancels; s.e. of the difference):",
        "",
        "| seed | L_nonlocal/L(0) - L_local/L(0) | s.e. |",
        "|---|---|---|",
        *(f"| {d['seed']} | {d['difference']:.3g} | {d['stderr']:.2g} |" for d in pairs),
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, histories, out / f"{stem}.png")
    print("\n".join(lines))


def plot(rows, histories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    trained = [r for r in rows if r["seeds"]]
    labels = [f"{r['hamiltonian']}\n{r['field']}" for r in trained]
    a.bar(
        range(len(trained)),
        [r["normalized_loss"] for r in trained],
        yerr=[r["seed_stderr"] for r in trained],
        capsize=4,
        color=["C0" if r["hamiltonian"] == "interacting" else "C2" for r in trained],
    )
    a.set_xticks(range(len(trained)), labels)
    a.set_yscale("log")
    a.set_ylabel("held-out L(V) / L(0)")
    a.set_title("3 qubits, switched couplings (mean ± s.e., seeds)")
    for name, hist in sorted(histories.items()):
        base = name.rsplit("/", 1)[0]
        color = f"C{sorted({n.rsplit('/', 1)[0] for n in histories}).index(base)}"
        b.plot(
            [h["step"] for h in hist],
            [h["train_loss"] for h in hist],
            color=color,
            lw=1,
            alpha=0.7,
            label=base if name.endswith("seed0") else None,
        )
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_ylabel("train L(V) / L(0)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
