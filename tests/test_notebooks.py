"""Execute every notebook in notebooks/ top to bottom in a fresh kernel; a cell error (a failed `assert` included) fails.

The kernel is this test run's own interpreter: a throw-away kernelspec pointing at ``sys.executable`` is put first on
JUPYTER_PATH, so a user-level "python3" kernelspec for some other Python can never be picked up by mistake. Each
notebook runs on a temporary copy, in a temporary working directory, so the committed files are never touched.
"""

import json
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "wavenet-dilated-tests"


def is_slow(path: Path) -> bool:
    """A notebook that takes more than about a minute on 2 CPU cores says so in its metadata:
    ``{"wavenet_dilated": {"slow": true}}``; it is then marked ``slow`` (CI still runs it)."""
    meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
    return bool(meta.get("wavenet_dilated", {}).get("slow", False))


PARAMS = [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if is_slow(p) else []) for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL_NAME, "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    mp.setenv("MPLBACKEND", "Agg")  # `%matplotlib inline` switches to the inline (Agg-based) backend; this is the fallback
    yield KERNEL_NAME
    mp.undo()


def test_notebooks_found():
    assert {"01_receptive_fields.ipynb", "02_context_module_segmentation.ipynb"} <= {p.name for p in NOTEBOOKS}
    assert is_slow(NOTEBOOK_DIR / "02_context_module_segmentation.ipynb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} have no outputs; execute it and commit the result"
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was committed with an error output: {errors[0].get('ename')}"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), f"{path.name} shows no plot"


#: what a local path looks like in an output: a home or working directory, or an installed package's file
LOCAL_PATH = re.compile(r"(/home/|/Users/|/root/|/work/|site-packages|dist-packages|[A-Za-z]:\\Users\\)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_outputs_show_no_local_path(path: Path):
    """Outputs are committed; a warning or traceback that names the machine it ran on must not be (nor anything that
    would differ on a reader's machine)."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        for out in cell.get("outputs", []):
            text = json.dumps({k: v for k, v in out.items() if k != "data"}) + json.dumps(
                {k: v for k, v in out.get("data", {}).items() if k.startswith("text/")})
            match = LOCAL_PATH.search(text)
            assert match is None, f"{path.name}, code cell {i}: an output shows a local path ({match.group(0)!r}...)"


@pytest.mark.parametrize("path", PARAMS)
def test_notebook_executes(path: Path, kernel_name: str, tmp_path: Path):
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}})
    start = time.time()
    client.execute()  # raises CellExecutionError, with the cell's traceback, on the first failing cell
    print(f"{path.name}: executed in {time.time() - start:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
