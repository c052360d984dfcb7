"""Exit codes say what happened (DESIGN §3): an internal error is 3 with one line, never 1."""

import pytest

from vitdeploy import cli, jobs


def _raise(exc):
    def f(*a, **k):
        raise exc
    return f


def test_internal_error_exits_3_with_one_line_naming_debug(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("VITDEPLOY_DEBUG", raising=False)
    monkeypatch.setattr(jobs, "info", _raise(ZeroDivisionError("division by zero\nsecond line")))
    assert cli.main(["info", str(tmp_path / "x.onnx")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "bug" in err[0] and "--debug" in err[0] and "ZeroDivisionError: division by zero" in err[0]
    assert "Traceback" not in err[0]


@pytest.mark.parametrize("argv", [["--debug", "info", "x.onnx"], ["info", "--debug", "x.onnx"]])
def test_debug_flag_shows_the_traceback(monkeypatch, argv):
    monkeypatch.delenv("VITDEPLOY_DEBUG", raising=False)
    monkeypatch.setattr(jobs, "info", _raise(ZeroDivisionError("boom")))
    with pytest.raises(ZeroDivisionError, match="boom"):
        cli.main(argv)


def test_debug_env_still_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("VITDEPLOY_DEBUG", "1")
    monkeypatch.setattr(jobs, "info", _raise(KeyError("k")))
    with pytest.raises(KeyError):
        cli.main(["info", "x.onnx"])


def test_out_of_memory_is_not_a_failed_check(monkeypatch, capsys):
    monkeypatch.setattr(jobs, "info", _raise(MemoryError()))
    assert cli.main(["info", "x.onnx"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory" in err[0]


@pytest.mark.parametrize("exc,code", [(jobs.UserError("bad"), 2), (jobs.CheckFailed("worse"), 1)])
def test_user_error_and_check_failed_keep_2_and_1(monkeypatch, capsys, exc, code):
    monkeypatch.setattr(jobs, "info", _raise(exc))
    assert cli.main(["info", "x.onnx"]) == code
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
