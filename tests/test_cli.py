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


class _Counting:
    """A stand-in for the model the callbacks see: a step counter and a stop flag."""

    def __init__(self):
        import tensorflow as tf

        self.iterations_done = tf.Variable(0, dtype=tf.int64)
        self.stop_training = False


def _run_epoch(callback, model, steps, planned):
    callback.set_model(model)
    callback.set_params({"steps": planned, "epochs": 1})
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for b in range(steps):
        model.iterations_done.assign_add(1)
        callback.on_train_batch_end(b, {"GAN": 1.5})
        if model.stop_training:
            break
    callback.on_epoch_end(0, {"GAN": 1.5})


def test_an_epoch_cut_short_says_how_many_steps_it_ran(capsys):
    from spade_tf.callbacks import Limits

    _run_epoch(Limits(max_steps=3), _Counting(), steps=10, planned=10)
    assert "epoch 1 cut short by train.max_steps: it ran 3 of 10 steps" in capsys.readouterr().out
    _run_epoch(Limits(max_steps=50), _Counting(), steps=10, planned=10)  # a whole epoch: silent
    assert "cut short" not in capsys.readouterr().out


def test_training_progress_in_a_log_is_plain_lines(capsys):
    from spade_tf.callbacks import LineProgress

    _run_epoch(LineProgress(total_steps=20, every_seconds=0.0), _Counting(), steps=5, planned=5)
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.strip().splitlines()
    assert lines[0].startswith("step 1/20 (epoch 1): GAN 1.500;")
    assert lines[-1].startswith("step 5/20 (end of epoch 1): GAN 1.500;")


def test_progress_bars_become_lines_off_a_terminal(monkeypatch):
    import io

    from spade_tf.progress import progress

    sink = io.StringIO()
    for _ in progress(range(7), desc="prepare", unit="ex", stream=sink, every=0.0):
        pass
    text = sink.getvalue()
    assert "\r" not in text and text.strip().splitlines()[-1].startswith("prepare: 7/7 ex (100%)")
    sink = io.StringIO()
    for _ in progress(range(7), desc="prepare", stream=sink):  # default: every 30 s, then the end
        pass
    assert len(sink.getvalue().strip().splitlines()) == 1


def test_progress_takes_an_iterable_of_unknown_length():
    import io

    from spade_tf.progress import progress

    class Unknown:
        def __iter__(self):
            return iter(range(3))

        def __len__(self):
            raise TypeError("The dataset length is unknown.")

    for enabled in (True, False):
        sink = io.StringIO()
        assert list(progress(Unknown(), desc="gen", stream=sink, enabled=enabled)) == [0, 1, 2]
    assert sink.getvalue() == ""
