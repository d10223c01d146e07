"""Theorem 2 of the paper: the dimensionality constraint (eq. 15, 18; DESIGN section 5).

A smooth, deterministic, microscopic LHV dynamics for a compact group G is a faithful
smooth action of G on Lambda; averaging a metric over G makes it an action by
isometries, and the isometry group of a manifold has dimension at most
dim Lambda (dim Lambda + 1) / 2, so (eq. 15)

    dim G <= dim Lambda (dim Lambda + 1) / 2.

For N qudits of dimension D (G = PU(D^N), dim G = D^(2N) - 1) and Lambda = Lambda_1^N
with d = dim Lambda_1 (dim Lambda = N d), eq. (18):

    B_QM(N) = D^(2N) - 1   <=   B_LHV(N) = N d (N d + 1) / 2.

Noninteracting (separable) unitaries PU(D)^N need only dim = N (D^2 - 1) <= B_LHV(N).

The N that satisfy eq. (18) are exactly 1, ..., N_max (possibly none): if B_QM(N) >
B_LHV(N) then B_QM(N + 1) = D^2 B_QM(N) + D^2 - 1 > 4 B_LHV(N) >= B_LHV(N + 1), since
B_LHV(N + 1) / B_LHV(N) <= ((N + 1) / N)^2 <= 4 for N >= 1 and D >= 2. So the first
failure is final and `largest_n` may stop there.

All sizes are exact Python integers (D^(2N) overflows int64 quickly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "b_qm",
    "b_lhv",
    "b_noninteracting",
    "allowed",
    "largest_n",
    "min_d",
    "table",
    "format_table",
    "plot_bound",
]


def _check(D: int, d: int | None = None, N: int | None = None) -> None:
    if int(D) != D or D < 2:
        raise ValueError(f"the qudit dimension D must be an integer >= 2; got {D}")
    if d is not None and (int(d) != d or d < 1):
        raise ValueError(f"the hidden-variable dimension d must be an integer >= 1; got {d}")
    if N is not None and (int(N) != N or N < 1):
        raise ValueError(f"the number of particles N must be an integer >= 1; got {N}")


def b_qm(D: int, N: int) -> int:
    """dim PU(D^N) = D^(2N) - 1: the left-hand side of eq. (18)."""
    _check(D, N=N)
    return int(D) ** (2 * int(N)) - 1


def b_lhv(d: int, N: int) -> int:
    """dim Lambda (dim Lambda + 1) / 2 with dim Lambda = N d: the right-hand side of eq. (18),
    the largest possible dimension of the isometry group of Lambda."""
    _check(2, d, N)
    n = int(N) * int(d)
    return n * (n + 1) // 2


def b_noninteracting(D: int, N: int) -> int:
    """dim PU(D)^N = N (D^2 - 1): what noninteracting (separable) unitaries need."""
    _check(D, N=N)
    return int(N) * (int(D) ** 2 - 1)


def allowed(D: int, d: int, N: int) -> bool:
    """Whether eq. (18) holds: D^(2N) - 1 <= N d (N d + 1) / 2 (necessary, not sufficient)."""
    return b_qm(D, N) <= b_lhv(d, N)


def largest_n(D: int, d: int) -> int:
    """The largest N satisfying eq. (18); 0 if none does. Every N <= N_max satisfies it
    (module doc), so the search stops at the first failure."""
    _check(D, d)
    N = 0
    while allowed(D, d, N + 1):
        N += 1
    return N


def min_d(D: int, N: int) -> int:
    """The smallest single-particle dimension d for which N qudits satisfy eq. (18)."""
    _check(D, N=N)
    d = 1
    while not allowed(D, d, N):
        d += 1
    return d


def table(D: int, d: int, nmax: int = 10) -> list[dict]:
    """One row per N = 1..nmax: both sides of eq. (18), whether it holds, and the
    noninteracting requirement N (D^2 - 1) with whether B_LHV covers it."""
    _check(D, d, nmax)
    rows = []
    for N in range(1, int(nmax) + 1):
        q, h, f = b_qm(D, N), b_lhv(d, N), b_noninteracting(D, N)
        rows.append(
            {
                "N": N,
                "B_QM": q,
                "B_LHV": h,
                "allowed": q <= h,
                "noninteracting": f,
                "noninteracting_allowed": f <= h,
            }
        )
    return rows


def format_table(D: int, d: int, nmax: int = 10) -> str:
    """The table of `table` as text, with the largest N."""
    rows = table(D, d, nmax)
    head = (
        f"Theorem 2, eq. (18): D^(2N) - 1 <= N d (N d + 1) / 2  "
        f"(qudit dimension D = {D}, dim Lambda_1 = d = {d})"
    )
    cols = ("N", "B_QM = D^(2N)-1", "B_LHV = Nd(Nd+1)/2", "eq. (18)", "N(D^2-1)", "noninteracting")
    body = [
        (
            str(r["N"]),
            str(r["B_QM"]),
            str(r["B_LHV"]),
            "yes" if r["allowed"] else "no",
            str(r["noninteracting"]),
            "yes" if r["noninteracting_allowed"] else "no",
        )
        for r in rows
    ]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
    out = [head, line(cols), line(["-" * w for w in widths]), *map(line, body)]
    n = largest_n(D, d)
    if n == 0:
        out.append(f"largest N: none (even one qudit needs d >= {min_d(D, 1)})")
    else:
        out.append(f"largest N: {n}  (N = {n + 1} needs d >= {min_d(D, n + 1)})")
    return "\n".join(out)


def plot_bound(
    D: int | Sequence[int] = 2,
    ds: Iterable[int] = (2, 3, 20),
    nmax: int = 10,
    path: str | Path | None = None,
    ax=None,
):
    """A figure like Fig. 4(b): B_QM = D^(2N) - 1 (blue, one line per D) and B_LHV =
    N d (N d + 1) / 2 (red, one line per d) against N on a log scale; an open marker on
    each B_LHV curve at the largest N it allows for each D. Returns the axes."""
    import matplotlib

    if path is not None and ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ds = [D] if isinstance(D, int) else list(D)
    ds = sorted(set(int(x) for x in ds))
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.5, 4))
    Ns = list(range(1, int(nmax) + 1))
    blues = plt.cm.Blues(_shades(len(Ds)))
    reds = plt.cm.Reds(_shades(len(ds)))
    for c, Di in zip(blues, Ds, strict=True):
        ax.semilogy(Ns, [b_qm(Di, N) for N in Ns], "o-", color=c, ms=4, label=f"$B_{{QM}}$, D={Di}")
    for c, d in zip(reds, ds, strict=True):
        ax.semilogy(
            Ns, [b_lhv(d, N) for N in Ns], "s--", color=c, ms=3, label=f"$B_{{LHV}}$, d={d}"
        )
        for Di in Ds:
            n = largest_n(Di, d)
            if 1 <= n <= nmax:
                ax.plot([n], [b_lhv(d, n)], "o", ms=10, mfc="none", mec=c)
    ax.set_xlabel("number of particles N")
    ax.set_ylabel("dimension")
    ax.set_xticks(Ns)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        "Theorem 2: dynamics needs $B_{LHV} \\geq B_{QM}$ (circles: largest N)", fontsize=9
    )
    if own:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
    return ax


def _shades(n: int):
    import numpy as np

    return np.linspace(0.55, 0.95, n) if n > 1 else np.array([0.75])
