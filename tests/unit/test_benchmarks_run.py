"""benchmarks/run.py on tiny sizes: its rows, verdicts and files cannot rot unnoticed (a few seconds)."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("benchmarks_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verdicts_are_computed_from_the_numbers(run):
    goals = run.Goals()
    assert goals.check("a", "", "", 0.9, "≥", 0.8, "≥ 0.8×") is True
    assert goals.check("b", "", "", 0.7, "≥", 0.8, "≥ 0.8×") is False
    assert goals.check("c", "", "", 0.5, "≤", 0.5, "≤ 0.5 s") is True
    assert goals.verdicts() == ["met", "**not met**", "met"]
    with pytest.raises(ValueError, match="op"):
        goals.check("d", "", "", 1, "<", 2, "")
    assert goals.markdown().splitlines()[0].startswith("| what |")


def test_train_rows_on_a_tiny_input(run):
    table, goals = run.Table(), run.Goals()
    t = run.bench_train(table, 10_000, 1, None, np.float64, goals)
    assert {"inverted.train", "x * 1.0 (memory bound)", "naive x*(rng.random(n)<p)/p"} <= set(t)
    (row,) = goals.rows
    assert "of the floor" in row[2] and row[-1] in ("met", "**not met**")


def test_from_torch_overhead_row(run):
    torch = run.torch_or_none()
    goals = run.Goals()
    run.bench_from_torch(goals, 1, torch, shape=(4, 64))
    (row,) = goals.rows
    assert row[-1] == "skipped" if torch is None else row[-1] in ("met", "**not met**")


def test_command_rows(run):
    goals = run.Goals()
    run.bench_commands(goals, 0.1, "naive passes", {name: "test" for name, _, _ in run.COMMANDS})
    assert goals.verdicts() == ["skipped"] * len(run.COMMANDS)
    if run.stats_dropout_exe() is not None:
        seconds, code, _ = run.time_command(["--help"])
        assert code == 0 and seconds > 0


def test_readme_example_matches_the_readme(run):
    readme = (ROOT / "README.md").read_text()
    assert "sd.verify_dropout(dropout, lambda x: x.copy(), keep_prob=0.8)" in readme
    assert "return x * (np.random.rand(*x.shape) < keep_prob) / keep_prob" in readme
    assert readme.count(run.README_START) == 1 and readme.count(run.README_END) == 1


def test_write_readme_replaces_only_the_block(run, tmp_path):
    page = tmp_path / "README.md"
    page.write_text(f"before\n{run.README_START}\nold\n{run.README_END}\nafter\n")
    run.write_readme(page, run.readme_block("stamp", "| t |"))
    assert page.read_text() == f"before\n{run.README_START}\nstamp\n\n| t |\n{run.README_END}\nafter\n"


def test_main_quick_writes_the_tables(run, tmp_path, monkeypatch):
    """main() end to end, with the slow parts (framework imports, child processes, BLAS loops) stubbed."""
    monkeypatch.setattr(run, "framework_cases", lambda: [("stub layer", None, 0.1, "stubbed in the test")])
    monkeypatch.setattr(run, "bench_memory", lambda table, draws: table.note("memory", "stubbed"))
    monkeypatch.setattr(run, "bench_torch_battery", lambda *a: None)
    monkeypatch.setattr(run, "bench_linearity", lambda table, rounds: table.note("linearity", "stubbed"))
    out = tmp_path / "RESULTS.md"
    goals = run.main(["--quick", "--no-report", "--size", "20000", "--rounds", "1", "--out", str(out)])
    text = out.read_text()
    assert "## The goals of issue #14" in text and "## Every row" in text and "--quick" in text
    assert set(goals.verdicts()) <= {"met", "**not met**", "skipped", "no goal", "not measured"}
    assert re.search(r"README ten-line example.*\| (met|\*\*not met\*\*) \|", text)
