# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Theorem 2: the dimension bound
#
# A smooth, deterministic, microscopic LHV dynamics for a group $G$ is a faithful smooth
# action of $G$ on $\Lambda$; averaging a metric makes it isometric, and isometry groups
# have dimension at most $\dim\Lambda(\dim\Lambda+1)/2$ (eq. 15). For $N$ qudits of
# dimension $D$ and $\Lambda = \Lambda_1^N$ with $d = \dim\Lambda_1$ (eq. 18):
#
# $$B_{QM} = D^{2N} - 1 \;\le\; B_{LHV} = \frac{Nd\,(Nd+1)}{2}.$$
#
# Noninteracting unitaries need only $N(D^2-1)$. The library: `lhvjax.bound`; the
# command line: `lhvjax bound --D 2 --d 2 [--nmax 10] [--plot FILE]`.

# %%
import os

import matplotlib.pyplot as plt

from lhvjax import bound

SMALL = os.environ.get("LHVJAX_SMALL", "1") == "1"
NMAX = 8 if SMALL else 12

# %% [markdown]
# ## The Bell model: $D = 2$, $d = \dim S^2 = 2$

# %%
print(bound.format_table(2, 2, NMAX))

# %% [markdown]
# ## A much richer base model: $d = 20$, for qubits and qutrits

# %%
print(bound.format_table(2, 20, NMAX))
print()
print(bound.format_table(3, 20, min(NMAX, 6)))

# %% [markdown]
# ## The smallest $d$ that $N$ particles need

# %%
print("  N   qubits (D=2)   qutrits (D=3)")
for N in range(1, 7):
    print(f"{N:3d}   {bound.min_d(2, N):12d}   {bound.min_d(3, N):13d}")

# %% [markdown]
# ## The paper's statements (Fig. 4 and the text after Corollary 1)

# %%
checks = {
    "Bell model (D=2, d=2): dynamics for one qubit only": bound.largest_n(2, 2) == 1,
    "d = 20: up to 6 qubits": bound.largest_n(2, 20) == 6,
    "d = 20: up to 3 qutrits": bound.largest_n(3, 20) == 3,
    "two qubits need d >= 3": bound.min_d(2, 2) == 3,
    "Bell model: noninteracting dynamics for every N": all(
        r["noninteracting_allowed"] for r in bound.table(2, 2, NMAX)
    ),
}
for text, ok in checks.items():
    print(("OK    " if ok else "FAIL  ") + text)
assert all(checks.values())

# %% [markdown]
# ## A figure like Fig. 4(b)
#
# Blue: $B_{QM}$ for qubits and qutrits; red: $B_{LHV}$ for $d = 2, 3, 20$. Circles mark
# the largest $N$ each $d$ allows (for each $D$). The exponential left side overtakes the
# quadratic right side at an $N$ that grows only like $\log d$ (Corollary 1).

# %%
fig, ax = plt.subplots(figsize=(6, 4.2))
bound.plot_bound(D=(2, 3), ds=(2, 3, 20), nmax=NMAX, ax=ax)
fig.tight_layout()
plt.show()
