"""MirroredStrategy over 2 logical CPUs, each run in its own process (see mirrored_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def _run_worker(spade_norm: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "mirrored_worker.py"), spade_norm],
        capture_output=True, text=True, timeout=600, cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_replicas_equal_one_device_with_synchronized_spade_norm():
    r = _run_worker("sync_batch")
    assert r["replicas"] == 2 and r["num_spectral_layers"] > 0 and r["num_bn_layers"] > 0
    assert r["uv_spread"] == 0.0  # every replica holds the same u, v ...
    assert r["uv_vs_single"] <= 1e-6  # ... the ones one device computes
    assert r["bn_spread"] == 0.0
    assert r["bn_vs_single"] <= 1e-5  # statistics of the global batch
    assert r["output_vs_single"] <= 1e-5


@pytest.mark.slow
def test_unsynchronized_batch_norm_differs_from_one_device():
    # The control: per-replica statistics must show up, or the test above could not fail.
    r = _run_worker("batch")
    assert r["uv_spread"] == 0.0
    assert r["output_vs_single"] > 1e-3
