"""The notebooks are stored with their outputs (`make notebooks`): every one shows a figure or a video on GitHub."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
FIGURES = ("image/png", "text/html")  # plots, and GIFs stored as an HTML <img>
spec = importlib.util.spec_from_file_location("execute_notebooks", NOTEBOOKS[0].parent.parent / "scripts" /
                                              "execute_notebooks.py")
execute_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_notebooks)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_stored_with_a_figure_and_no_volatile_metadata(path):
    notebook = nbformat.read(path, as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any(kind in output.get("data", {}) for output in outputs for kind in FIGURES), \
        f"{path.name} shows no figure: run `make notebooks`"
    assert "widgets" not in notebook.metadata
    assert not any("execution" in cell.metadata for cell in notebook.cells), "timing metadata left in"
    assert not any(execute_notebooks.GIF in output.get("data", {}) for output in outputs), "image/gif: not on GitHub"


def test_all_notebooks_fit_the_size_budget():
    total = sum(path.stat().st_size for path in NOTEBOOKS) / 1e6
    assert total < execute_notebooks.SIZE_BUDGET_MB, f"notebooks take {total:.1f} MB"


def test_strip_numbers_cells_drops_widgets_and_stores_gifs_as_html():
    gif = "R0lGODlh\nAQABAAAAACw="  # base64 text as stored, with a line break
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("a", outputs=[nbformat.v4.new_output("display_data", {execute_notebooks.GIF: gif})]),
        nbformat.v4.new_code_cell("b", outputs=[nbformat.v4.new_output("display_data", {execute_notebooks.WIDGET: {}}),
                                                nbformat.v4.new_output("execute_result", {"text/plain": "1"})]),
    ])
    notebook.metadata["widgets"] = {"state": {}}
    notebook.cells[1].metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    execute_notebooks.strip(notebook)
    first, second = notebook.cells[1], notebook.cells[2]
    assert "widgets" not in notebook.metadata and "execution" not in first.metadata
    assert (first.execution_count, second.execution_count) == (1, 2)
    assert first.outputs[0].data == {"text/html": '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="/>'}
    assert [output.output_type for output in second.outputs] == ["execute_result"]
    assert second.outputs[0].execution_count == 2
