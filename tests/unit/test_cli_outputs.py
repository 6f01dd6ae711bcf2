"""Output paths fail fast and clean; Ctrl-C is one line and exit code 130."""

import pytest

from stats_dropout.cli import main


@pytest.mark.parametrize("argv, msg", [
    (["report", "--out", "{file}"], "`--out` must be a directory"),
    (["claims", "--csv", "{missing}/ledger.csv"], "`--csv`: directory"),
    (["schemes", "--csv", "{missing}/table.csv", "--schemes", "inverted"], "`--csv`: directory"),
    (["claims", "--csv", "{dir}"], "`--csv` must be a file path"),
    (["report", "--out", "{file}/sub"], "`--out` must be a writable directory"),
])
def test_bad_output_paths_are_usage_errors_before_any_computing(tmp_path, capsys, argv, msg):
    existing = tmp_path / "a_file"
    existing.write_text("x")
    argv = [a.format(file=existing, missing=tmp_path / "no" / "such", dir=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path, monkeypatch, capsys):
    from stats_dropout.reporting import report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", interrupted)
    assert main(["report", "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "resume" in err[0]


def test_unwritable_directory_is_named(tmp_path, capsys):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("permissions are not enforced for this user")
        assert main(["report", "--out", str(locked)]) == 2
        assert "`--out` must be a writable directory" in capsys.readouterr().err
    finally:
        os.chmod(locked, 0o700)
