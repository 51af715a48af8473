"""The newcomer's path: bad input to ``spade-tf train`` ends with exit status 2 and at most three
lines on stderr that name the file (or field) and the value; ``-v`` adds the traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli_errors")]


def _pairs(root, n=3, size=64, classes=4):
    """``n`` photo/label/instance triples in the custom layout under ``root``."""
    rng = np.random.default_rng(0)
    for sub in ("img", "label", "inst"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(root / "img" / f"p{i}.png")
        Image.fromarray(rng.integers(0, classes, (size, size)).astype(np.uint8)).save(
            root / "label" / f"p{i}.png")
        Image.fromarray(rng.integers(0, 3, (size, size)).astype(np.uint8)).save(
            root / "inst" / f"p{i}.png")


def _train(tmp_path, *extra, verbose=False):
    args = [sys.executable, "-m", "spade_tf"] + (["-v"] if verbose else []) + [
        "train", "--config", "tiny", "--workdir", str(tmp_path / "run"), "--max-steps", "1",
        "--set", f"data.root={tmp_path / 'data'}", "--set", "data.image_dir=img",
        "--set", "data.label_dir=label", "--set", "data.instance_dir=inst", *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user has it: the CLI quiets TensorFlow itself
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)


def _break(case, data):
    if case == "out-of-range id":
        lab = np.zeros((64, 64), np.uint8)
        lab[5, 5] = 9
        Image.fromarray(lab).save(data / "label" / "p1.png")
        return "p1.png", "9"
    if case == "size mismatch":
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(data / "img" / "p2.png")
        return "p2.png", "64x48"
    if case == "truncated file":
        path = data / "img" / "p0.png"
        path.write_bytes(path.read_bytes()[:200])
        return "p0.png", "truncated"
    if case == "missing pair":
        (data / "label" / "p2.png").unlink()
        return "p2.png", "without a label"
    if case == "smaller than a batch":
        for i in (1, 2):
            for sub in ("img", "label", "inst"):
                (data / sub / f"p{i}.png").unlink()
        return "train split has 1 example", "batch of 2"
    raise AssertionError(case)


CASES = ["out-of-range id", "size mismatch", "truncated file", "missing pair",
         "smaller than a batch"]


@pytest.mark.parametrize("case", CASES)
def test_bad_data_is_one_line_and_exit_status_2(tmp_path, case):
    _pairs(tmp_path / "data")
    name, value = _break(case, tmp_path / "data")
    proc = _train(tmp_path)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) <= 3, proc.stderr
    assert any(name in x and value in x for x in lines), lines
    assert "Traceback" not in proc.stderr


def test_an_unknown_config_key_is_one_line_naming_the_key_and_value(tmp_path):
    _pairs(tmp_path / "data")
    proc = _train(tmp_path, "--set", "model.num_clases=4")
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) <= 3, proc.stderr
    assert any("num_clases" in x and "did you mean 'model.num_classes'" in x for x in lines), lines


def test_verbose_adds_the_traceback(tmp_path):
    _pairs(tmp_path / "data")
    _break("missing pair", tmp_path / "data")
    proc = _train(tmp_path, verbose=True)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "p2" in proc.stderr.splitlines()[-1]
