"""The general qubit base model (App. A-B) on the Bloch sphere, before and after a unitary.

    python experiments/basemodel.py [--l-max 3] [--seed 0] [--angle 2.0]

Draws a random hidden variable lambda (2 x (l_max + 1)^2, standard normal entries) and
maps q(up | n, lambda) = softmax(lambda B(n))_up over measurement directions n
(longitude phi, z = cos theta, an area-preserving map). U = exp(-i angle n_U.sigma / 2)
rotates by `angle` about a fixed axis n_U. Three panels:

    q(up | n, lambda),    q(up | n, T_U(lambda)),    q(up | U^dag[n], lambda);

the last two agree to rounding (eq. 22), the title gives their largest difference. The
axis n_U is marked; the pattern of the second panel is the first one turned by R_U about it.
Writes experiments/results/basemodel.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
AXIS = np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)


def grid(n_phi: int = 181, n_z: int = 91) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    phi = np.linspace(-np.pi, np.pi, n_phi)
    z = np.linspace(-1, 1, n_z)
    P, Z = np.meshgrid(phi, z)
    s = np.sqrt(np.clip(1 - Z**2, 0, None))
    return phi, z, np.stack([s * np.cos(P), s * np.sin(P), Z], axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--l-max", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--angle", type=float, default=2.0, help="rotation angle of U (rad)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "basemodel.png")
    args = parser.parse_args()

    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lhvjax import basemodel as bm

    K = bm.n_basis(args.l_max)
    lam = jnp.asarray(np.random.default_rng(args.seed).standard_normal((2, K)))
    H = 0.5 * jnp.einsum("k,kab->ab", jnp.asarray(AXIS), bm.PAULI)  # exp(-iHt): angle t
    U = bm.propagator(H, args.angle)
    Ud = jnp.conj(U.T)
    phi, z, n = grid()
    panels = [
        (r"$q(\uparrow|n,\lambda)$", bm.q(n, lam)[..., 0]),
        (r"$q(\uparrow|n,T_U(\lambda))$", bm.q(n, bm.act(U, lam))[..., 0]),
        (r"$q(\uparrow|U^\dagger[n],\lambda)$", bm.q(bm.apply(Ud, n), lam)[..., 0]),
    ]
    gap = float(jnp.max(jnp.abs(panels[1][1] - panels[2][1])))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True, constrained_layout=True)
    for ax, (title, val) in zip(axes, panels, strict=True):
        im = ax.pcolormesh(phi, z, np.asarray(val), vmin=0, vmax=1, cmap="RdBu_r", shading="auto")
        ax.plot(np.arctan2(AXIS[1], AXIS[0]), AXIS[2], "k*", ms=10, label="rotation axis")
        ax.set_title(title)
        ax.set_xlabel(r"$\phi$")
    axes[0].set_ylabel(r"$z=\cos\theta$")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.9, label="probability of up")
    fig.suptitle(
        f"qubit base model, l_max = {args.l_max} (dim Lambda_1 = {bm.dim(args.l_max)}), "
        f"U: angle {args.angle:g} about (1,1,1)/sqrt 3;  max |panel 2 - panel 3| = {gap:.1e}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} (max difference {gap:.2e})")


if __name__ == "__main__":
    main()
