"""Every example in README.md runs, and says what README says it does.

Python blocks are executed as they stand, with the names a reader supplies (``my_dropout``,
``my_eval``) defined as a correct implementation; ``stats-dropout`` command lines in bash blocks
run through the CLI's ``main`` on files of the same names made from the test fixtures. The two
set-up commands of README's first screen are checked by ``.ci/run`` itself (it runs the test
command verbatim); the report command's full run is in the slow tier
(``tests/unit/test_reporting.py``).
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import shlex
import shutil

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FIXTURES = ROOT / "tests" / "fixtures"


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def my_dropout(x, keep_prob):
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1]; got {keep_prob}")
    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob


def my_eval(x):
    return x.copy()


def _needs(source):
    """Skip a block whose framework is not installed (the extras are optional)."""
    for module in ("torch", "jax", "flax", "keras"):
        if re.search(rf"^\s*(import|from) {module}\b|import .*\b{module}\b", source, flags=re.M):
            pytest.importorskip(module)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_example_runs(index, monkeypatch):
    source = blocks("python")[index]
    _needs(source)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    namespace = {"my_dropout": my_dropout, "my_eval": my_eval, "__name__": "readme_example"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(source, f"README.md python block {index}", "exec"), namespace)
    # A block that ends on `result.passed  # True` promises a passing result.
    if re.search(r"^result\.passed\s+# True", source, flags=re.M):
        assert namespace["result"].passed, str(namespace["result"])


def test_ten_line_example_fails_without_the_rescale_as_readme_says():
    source = blocks("python")[0].replace("/ keep_prob\n", "\n", 1)
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(source, "README.md ten-line example without / keep_prob", "exec"), namespace)
    result = namespace["result"]
    failed = {c.check.split("[")[0] for c in result.failed_checks}
    assert {"check_kept_scale", "check_mean"} <= failed
    assert any("did you forget to divide by keep_prob" in d for d in result.diagnosis)




def _command_lines():
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("stats-dropout verify"):
                lines.append(line)
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_cli_example_runs_on_a_correct_file(line, tmp_path, monkeypatch, capsys):
    from stats_dropout.cli import main

    shutil.copy(FIXTURES / "plain_dropout.py", tmp_path / "my_homework.py")
    with open(tmp_path / "my_homework.py", "a", encoding="utf-8") as fh:
        fh.write("\n" + (FIXTURES / "course_correct.py").read_text(encoding="utf-8"))
    # README's CS231n line uses --p-means drop: a correct layer whose p is the drop probability.
    shutil.copy(FIXTURES / "cs231n_drop_correct.py", tmp_path / "layers.py")
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(line)[1:]
    code = main(argv)
    assert code == 0, capsys.readouterr().out[-3000:]


def test_ci_example_gives_the_ids_readme_prints(pytester):
    block = next(b for b in blocks("python") if "parametrize_with_checks" in b)
    pytester.makepyfile(test_readme_ci=(
        "import numpy as np\n"
        "def my_dropout(x, keep_prob):\n"
        "    if not 0 < keep_prob <= 1:\n"
        "        raise ValueError('keep_prob must be in (0, 1]')\n"
        "    return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob\n"
        "def my_eval(x):\n"
        "    return x.copy()\n" + block))
    printed = re.search(r"# (test_dropout\[\S+\]\])", block).group(1)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--collect-only", "-q")
    assert any(line.endswith(printed) for line in result.outlines), result.outlines[:5]
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q",
                                          "-k", "check_keep_rate and not per_ and not vs_")
    result.assert_outcomes(passed=2)  # keep_prob 0.8 and the asymmetric 0.3

