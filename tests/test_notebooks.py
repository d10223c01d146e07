"""Every notebooks/*.ipynb runs top to bottom, in its small setting (LHVJAX_SMALL=1).

The kernel is "python3" from the environment running the tests: ipykernel installs that
kernelspec with argv[0] = "python", which jupyter_client replaces with sys.executable,
so the notebooks see this venv (checked by a cell prepended to each run). They use the
canonical results under experiments/ where present (experiments/results/*.json,
experiments/runs/*) and train tiny fields where not. The executed copies are not written
back; `python tests/test_notebooks.py` re-executes and saves them (outputs included).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 600  # per cell; the small setting aims for about a minute per notebook

_CHECK = "import sys; print(sys.executable)"


def execute(path: Path, small: bool = True, check_kernel: bool = False):
    """Run the notebook at `path` in a fresh python3 kernel (cwd: its folder) and return
    the executed notebook and its wall time."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if check_kernel:
        nb.cells.insert(0, nbformat.v4.new_code_cell(_CHECK))
    env = dict(os.environ)
    env["LHVJAX_SMALL"] = "1" if small else "0"
    env.pop("JAX_ENABLE_X64", None)  # set by tests/conftest.py; notebooks choose their own
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.perf_counter()
    client.execute(env=env)  # passed on to the kernel manager's start_kernel
    wall = time.perf_counter() - t0
    if check_kernel:
        out = "".join(o.get("text", "") for o in nb.cells.pop(0).outputs).strip()
        assert Path(out).resolve() == Path(sys.executable).resolve(), (out, sys.executable)
    return nb, wall


def test_there_are_notebooks():
    names = {p.stem for p in NOTEBOOKS}
    for stem in ("01_counterexample", "02_loss_landscape", "03_velocity_fields"):
        assert stem in names
    assert "04_dimension_bound" in names and "05_gauge_freedom" in names
    for p in NOTEBOOKS:  # each paired with a jupytext percent script
        assert p.with_suffix(".py").exists(), p


# the two heaviest (about a minute each on 2 cores) run under `make test-slow`, keeping CI
# under its 20 minutes; the others run in every `make test`
SLOW_NOTEBOOKS = {"02_loss_landscape", "03_velocity_fields"}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p for p in NOTEBOOKS],
    ids=lambda p: p.stem,
)
def test_notebook_runs_without_errors(path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb, wall = execute(path, check_kernel=True)  # raises CellExecutionError on any error
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    print(f"{path.name}: {wall:.0f} s")


if __name__ == "__main__":  # re-execute and save every notebook with its outputs
    import nbformat

    for p in NOTEBOOKS if len(sys.argv) < 2 else [Path(a).resolve() for a in sys.argv[1:]]:
        nb, wall = execute(p)
        nbformat.write(nb, p)
        print(f"{p.name}: executed in {wall:.0f} s and saved")
