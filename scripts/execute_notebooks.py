"""Re-execute notebooks in place and store their outputs, so that a reader on GitHub sees every figure.

    python scripts/execute_notebooks.py notebooks/*.ipynb      (what `make notebooks` runs)

Each notebook runs top to bottom in a fresh kernel, one at a time, in the notebooks/ folder; then the volatile
parts are stripped (timing metadata, widget state; execution counts become 1, 2, ...), so that a re-run without
changes gives the same file up to the numbers that are measured (times). Progress bars are switched off
(TQDM_DISABLE=1) and their widgets dropped. Prints each notebook's run time and stored size.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

SIZE_BUDGET_MB = 20.0  # all notebooks together
WIDGET = "application/vnd.jupyter.widget-view+json"  # a progress bar's output: GitHub cannot show it
GIF = "image/gif"  # nor this type, but it shows the same GIF as an HTML <img> with a data URI


def strip(notebook: nbformat.NotebookNode) -> None:
    """Remove what changes from run to run without saying anything (timings, widgets such as progress bars),
    number the code cells 1, 2, ... (nbval needs a count on every cell with outputs; a top-to-bottom run gives
    these), and store animations (`show_video`'s image/gif) as an HTML <img>, which GitHub's viewer shows."""
    notebook.metadata.pop("widgets", None)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    for count, cell in enumerate(code_cells, start=1):
        cell.execution_count = count
        cell.outputs = [output for output in cell.outputs if WIDGET not in output.get("data", {})]
        for output in cell.outputs:
            if "execution_count" in output:
                output.execution_count = count
            if GIF in output.get("data", {}):
                gif = "".join(output.data.pop(GIF).split())  # base64 text
                output.data["text/html"] = f'<img src="data:{GIF};base64,{gif}"/>'


def execute(path: Path, timeout: int) -> float:
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    strip(notebook)
    nbformat.write(notebook, path)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    missing = [str(path) for path in args.notebooks if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook: {', '.join(missing)}")
    os.environ["TQDM_DISABLE"] = "1"  # inherited by the kernels
    failed = []
    for path in args.notebooks:
        try:
            seconds = execute(path, args.timeout)
        except CellExecutionError as error:  # leave this notebook as it was, run the others
            print(f"{path}: FAILED, left unchanged\n{str(error)[-2000:]}", flush=True)
            failed.append(str(path))
            continue
        print(f"{path}: {seconds / 60:.1f} min, {path.stat().st_size / 1e6:.2f} MB stored", flush=True)
    total = sum(path.stat().st_size for path in args.notebooks[0].parent.glob("*.ipynb")) / 1e6
    print(f"all notebooks in {args.notebooks[0].parent}: {total:.1f} MB (budget {SIZE_BUDGET_MB:.0f} MB)")
    if failed:
        sys.exit(f"{len(failed)} notebook(s) failed: {', '.join(failed)}")
    if total > SIZE_BUDGET_MB:
        sys.exit(f"the notebooks take {total:.1f} MB, over the {SIZE_BUDGET_MB:.0f} MB budget: use smaller figures")


if __name__ == "__main__":
    main()
