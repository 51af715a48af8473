"""The command line's plumbing: argv, --workers, python -m spade_tf, which errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO
from spade_tf import cli


def test_workers_flag_is_removed_in_both_spellings():
    argv = ["train", "--config", "tiny", "--workers", "2", "--workdir", "w"]
    assert cli.without_workers_flag(argv) == ["train", "--config", "tiny", "--workdir", "w"]
    argv = ["train", "--workers=2", "--config", "tiny", "--workdir", "w"]
    assert cli.without_workers_flag(argv) == ["train", "--config", "tiny", "--workdir", "w"]


@pytest.mark.parametrize("flag", [["--workers=2"], ["--workers", "2"]])
def test_main_launches_workers_from_its_own_argv(monkeypatch, tmp_path, flag):
    seen = []
    monkeypatch.setattr(cli, "launch_local_workers", lambda argv, n: seen.append((argv, n)) or 0)
    monkeypatch.setattr(sys, "argv", ["something", "else"])  # main must not read sys.argv
    argv = ["train", "--config", "tiny", "--workdir", str(tmp_path), *flag]
    assert cli.main(argv) == 0
    assert seen == [(["train", "--config", "tiny", "--workdir", str(tmp_path)], 2)]


def test_a_bug_keeps_its_traceback(monkeypatch):
    """No top-level ``except TypeError``: a programming error is not turned into one line."""
    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli, "cmd_config", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["config", "--config", "tiny"])


def test_bad_input_is_exit_status_2(capsys):
    assert cli.main(["config", "--config", "no_such_preset"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_preset" in err[0]


def test_python_dash_m_spade_tf_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "spade_tf", "--help"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "usage: spade-tf" in proc.stdout


def test_tensorflows_import_banner_is_held_back_unless_verbose():
    code = ("import sys; from spade_tf.cli import import_tensorflow_quietly; "
            "import_tensorflow_quietly(verbose=sys.argv[1] == 'v'); print('ok')")
    quiet = subprocess.run([sys.executable, "-c", code, "q"], capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ok"
    assert quiet.stderr.strip() == "", quiet.stderr
