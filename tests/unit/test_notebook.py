"""Notebook targets (``stats-dropout verify homework.ipynb:f``) and results shown in Jupyter.

The fixture tests/fixtures/course_notebook.ipynb has the course's layout: markdown, an imports
cell with ``%matplotlib inline``, a ``!pip`` + download cell, the graded function (the
template, ``np.random.seed(1)`` included), a test cell, a ``%%time`` cell and a training cell
that raises if it runs. Only imports and definitions may run.
"""

import ast
import pathlib

import numpy as np
import pytest

import stats_dropout.verification.battery
from stats_dropout.cli import main
from stats_dropout.cli import notebook as nb_loader
from stats_dropout.inference.results import Decision
from stats_dropout.inference.verdicts import CheckResult, VerificationResult
from stats_dropout.verification.diagnosis import identical_masks_cause

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
NOTEBOOK = FIXTURES / "course_notebook.ipynb"
TARGET = f"{NOTEBOOK}:forward_propagation_with_dropout"


def test_definitions_keep_imports_defs_and_constants_only():
    cells = [("markdown", "import os  # not code"),
             ("code", "import numpy as np\n%matplotlib inline\n!pip install x\nK = 0.86\nA, B = (1, -2)\n"
                      "x = np.zeros(3)\nprint(K)\nfor i in range(3):\n    pass\n"
                      "try:\n    import missing_mod\nexcept ImportError:\n    missing_mod = None\n"),
             ("code", "%%time\ndef never(): pass\n"),
             ("code", "def f(x):\n    return x\nclass C:\n    pass\nf(1)\n"),
             ("code", "x = !ls\n")]
    kept, warnings = nb_loader.definitions(cells)
    kinds = [(number, [type(n).__name__ for n in nodes]) for number, nodes, _ in kept]
    assert kinds == [(2, ["Import", "Assign", "Assign", "Try"]), (4, ["FunctionDef", "ClassDef"])]
    assert kept[0][1][1].lineno == 4  # magic lines are blanked, so line numbers are the cell's own
    assert ast.unparse(kept[0][1][1]) == "K = 0.86"
    assert warnings == ["cell 5 does not parse as Python (line 1: invalid syntax); skipped"]


def test_load_runs_no_training_download_or_magic(capsys):
    pytest.importorskip("nbformat")
    module = nb_loader.load_notebook(str(NOTEBOOK))
    assert capsys.readouterr().err == ""  # the training cell (which raises) never ran
    assert module.KEEP_PROB == 0.86 and callable(module.forward_propagation_with_dropout)
    assert not hasattr(module, "A3") and not hasattr(module, "parameters")
    # The learner's source is reachable, by cell and line.
    from stats_dropout.cli.learner import reseed_line

    line, code, path = reseed_line(module.forward_propagation_with_dropout)
    assert code == "np.random.seed(1)"
    assert nb_loader.notebook_place(path, line) == "(cell 5, line 6 of course_notebook.ipynb)"


def test_failed_import_is_a_warning(tmp_path, capsys):
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_notebook

    path = tmp_path / "hw.ipynb"
    cell = new_code_cell("from reg_utils_missing import relu\n\ndef f(x):\n    return x\n")
    nbformat.write(new_notebook(cells=[cell]), str(path))
    module = nb_loader.load_notebook(str(path))
    err = capsys.readouterr().err.strip().splitlines()
    assert callable(module.f)
    assert len(err) == 1 and "cell 1: `from reg_utils_missing import relu` failed (ModuleNotFoundError" in err[0]


def reseeded_result(p=0.8):
    """What the battery returns for the reseeded template (see test_learner_output for a real run)."""
    d = Decision(property="correlation of masks of successive calls", method="z", estimate=1.0, expected=0.0,
                 ci_low=0.99, ci_high=1.0, pvalue=0.0, false_fail_rate=5e-8, false_pass_rate=1e-3,
                 min_detectable_effect=0.005, n=1000, rejected=True)
    cause = identical_masks_cause(None, False, 45)
    checks = (CheckResult(f"check_kept_scale[keep_prob={p}]", "passed", "", None, p),
              CheckResult(f"check_independence_calls[keep_prob={p}]", "failed",
                          "every call drops the same units: all 45 successive calls produced identical masks.", d, p),
              CheckResult(f"check_mean[keep_prob={p}]", "failed", f"m: estimate 1.01. Likely cause: {cause}.", d, p))
    return VerificationResult(checks, "inverted", 0, 1e-6, 1e-3, (), (f"at keep_prob={p}: {cause}",), "f(x, keep_prob)")


def test_notebook_target_from_the_cli(capsys, monkeypatch):
    pytest.importorskip("nbformat")
    calls = []

    def battery(train, eval=None, **kwargs):
        calls.append(train)
        return reseeded_result()

    monkeypatch.setattr(stats_dropout.verification.battery, "verify_dropout", battery)
    code = main(["verify", TARGET, "--keep-prob", "0.8"])
    out, err = capsys.readouterr()
    assert (code, err) == (1, ""), err
    lines = out.splitlines()
    assert lines[0] == ("course_notebook.ipynb:forward_propagation_with_dropout: convention course (detected), "
                        "keep_prob 0.8")
    text = " ".join(out.split())
    assert "np.random.seed(1) (cell 5, line 6 of course_notebook.ipynb) reseeds numpy's RNG" in text
    assert "grader needs that seed" in text and "The dropout arithmetic is correct" in text
    assert len(lines) <= 15 and max(map(len, lines)) <= 100
    # Each battery got the notebook's own network, one layer at a time.
    assert [t.__name__ for t in calls] == ["forward_propagation_with_dropout[layer=1]",
                                           "forward_propagation_with_dropout[layer=2]"]
    x = np.abs(np.linspace(0.5, 1.5, 4096))
    np.random.seed(0)
    y = calls[0](x, 0.5)
    assert set(np.unique(np.round(y / x, 6)).tolist()) == {0.0, 2.0}


def test_notebook_usage_errors(capsys, tmp_path):
    pytest.importorskip("nbformat")
    assert main(["verify", f"{tmp_path / 'missing.ipynb'}:f", "--keep-prob", "0.8"]) == 2
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    assert main(["verify", f"{bad}:f", "--keep-prob", "0.8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reading notebook" in err[0]
    assert main(["verify", f"{NOTEBOOK}:nope", "--keep-prob", "0.8"]) == 2
    assert "has no attribute 'nope'; its functions: forward_propagation_with_dropout" in capsys.readouterr().err


def test_result_displays_as_html_in_a_kernel(tmp_path):
    pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbformat.v4 import new_code_cell, new_notebook

    source = ("from stats_dropout.inference.verdicts import CheckResult, VerificationResult\n"
              "VerificationResult((CheckResult('check_mean[keep_prob=0.8]', 'failed', 'a < b'),), 'inverted', 0, "
              "1e-6, 1e-3)")
    nb = new_notebook(cells=[new_code_cell(source)])
    try:
        nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                                ).execute()
    except Exception as exc:  # noqa: BLE001 — no usable kernel here: nothing to test
        pytest.skip(f"no Jupyter kernel: {type(exc).__name__}: {exc}")
    (output,) = [o for o in nb.cells[0].outputs if o.get("output_type") == "execute_result"]
    assert "text/html" in output["data"]
    assert "FAILED" in output["data"]["text/html"] and "a &lt; b" in output["data"]["text/html"]
