import ast

import nbformat
import numpy as np
import pytest

from utils.chapters import (
    DATABRICKS_ONLY_TAG,
    NotebookResult,
    chapter_paths,
    inject_parameters,
    run_notebook,
    skip_databricks_only,
    summary_table,
)
from utils.record import RECORD_MIME, jsonable, recorded_values


def make_notebook(path, *cells, parameters="N = get_param('N', 1)"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from utils.env import get_param\nfrom utils.record import record"
        ),
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        *[nbformat.v4.new_code_cell(c) for c in cells],
    ]
    nbformat.write(nb, path)
    return path


@pytest.mark.unit
def test_jsonable_converts_numpy_and_nested_values():
    value = {
        "a": np.int64(3),
        "b": np.array([1.5, 2.0]),
        "c": (np.float32(0.5),),
        "d": float("nan"),
    }
    assert jsonable(value) == {"a": 3, "b": [1.5, 2.0], "c": [0.5], "d": "nan"}


@pytest.mark.unit
def test_inject_parameters_goes_before_the_parameters_cell(tmp_path):
    nb = nbformat.read(make_notebook(tmp_path / "n.ipynb"), as_version=4)
    values = {"N": 5, "FLAG": False, "ON": True, "NOTHING": None, "NAME": 'a "quoted" name'}
    inject_parameters(nb, values)
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"]
    call = nb.cells[1].source.split("inject_params(", 1)[1].rsplit(")", 1)[0]
    assert ast.literal_eval(call) == values  # Python literals: False, not JSON's false
    assert nb.cells[2].metadata["tags"] == ["parameters"]


@pytest.mark.unit
def test_inject_parameters_needs_a_parameters_cell():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        inject_parameters(nb, {"N": 5})


@pytest.mark.unit
def test_recorded_values_reads_the_record_mime_type():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={RECORD_MIME: {"rows": 3}, "text/plain": "x"})
    ]
    nb.cells = [cell]
    assert recorded_values(nb) == {"rows": 3}


@pytest.mark.integration
def test_run_notebook_injects_and_returns_recorded_values(tmp_path):
    path = make_notebook(tmp_path / "ok.ipynb", "record('n_squared', N * N)")
    result = run_notebook(path, {"N": "7"}, output_dir=tmp_path / "out")
    assert result.ok, result.error
    assert result.recorded == {"n_squared": 49}
    assert result.peak_rss_mb > 10 and result.seconds > 0
    assert (tmp_path / "out" / "ok.ipynb").exists()
    assert nbformat.read(path, as_version=4).cells[1].metadata["tags"] == [
        "parameters"
    ]  # source untouched


@pytest.mark.unit
def test_databricks_only_cells_are_emptied_in_place():
    nb = nbformat.v4.new_notebook()
    install = "%pip install -r ../requirements-databricks.txt\ndbutils.library.restartPython()"
    nb.cells = [
        nbformat.v4.new_code_cell(install, metadata={"tags": [DATABRICKS_ONLY_TAG]}),
        nbformat.v4.new_code_cell("x = 1"),
    ]
    skip_databricks_only(nb)
    assert nb.cells[0].source.startswith("# skipped here") and "%pip" not in nb.cells[0].source
    assert nb.cells[1].source == "x = 1" and len(nb.cells) == 2


@pytest.mark.integration
def test_run_notebook_skips_databricks_only_cells(tmp_path):
    path = make_notebook(tmp_path / "db.ipynb", "record('after', N)")
    nb = nbformat.read(path, as_version=4)
    # On a laptop this cell would fail (no dbutils); the runner must not execute it.
    nb.cells.insert(
        0,
        nbformat.v4.new_code_cell(
            "dbutils.library.restartPython()", metadata={"tags": [DATABRICKS_ONLY_TAG]}
        ),
    )
    nbformat.write(nb, path)
    result = run_notebook(path, {"N": 3}, output_dir=tmp_path / "out")
    assert result.ok, result.error
    assert result.recorded == {"after": 3}
    assert "restartPython" in nbformat.read(path, as_version=4).cells[0].source  # source kept


@pytest.mark.integration
def test_run_notebook_reports_a_failing_cell(tmp_path):
    path = make_notebook(
        tmp_path / "bad.ipynb", "record('before', 1)", "raise ValueError('boom here')"
    )
    result = run_notebook(path, output_dir=tmp_path / "out")
    assert result.status == "failed"
    assert "ValueError" in result.error and "boom here" in result.error
    assert result.recorded == {"before": 1}


@pytest.mark.integration
def test_run_notebook_reports_a_bad_parameter(tmp_path):
    path = make_notebook(tmp_path / "param.ipynb", "record('n', N)")
    result = run_notebook(path, {"N": "many"}, output_dir=tmp_path / "out")
    assert result.status == "failed" and "N='many' is not a valid int" in result.error


@pytest.mark.unit
def test_summary_table_lists_each_chapter():
    results = [
        NotebookResult("01_a.ipynb", "ok", 12.3, 500.0, {"auc": 0.861234, "rows": 10}),
        NotebookResult("02_b.ipynb", "failed", 3.0, 100.0, {}, error="x"),
    ]
    table = summary_table(results)
    assert "01_a" in table and "auc=0.8612" in table and "rows=10" in table
    assert "failed" in table.splitlines()[3]


@pytest.mark.unit
def test_chapter_selection():
    assert [p.name[:2] for p in chapter_paths(["01"])] == ["01"]
    with pytest.raises(SystemExit, match="No chapter matches"):
        chapter_paths(["99_nothing"])


@pytest.mark.integration
def test_run_notebook_reads_back_record_results(tmp_path):
    path = make_notebook(
        tmp_path / "many.ipynb",
        "from utils.record import record_results\nrecord_results({'n': N, 'twice': 2 * N})",
    )
    result = run_notebook(path, {"N": 4}, output_dir=tmp_path / "out")
    assert result.ok, result.error
    assert result.recorded == {"n": 4, "twice": 8}
