"""The low-memory allocator setting (spade_tf.memory, ``spade-tf --low-memory``).

What it saves on the generator is measured by scripts/inference_memory.py and benchmark.py; this
checks the mechanism: glibc keeps a freed block in the heap once its threshold was raised, and
with the setting it gives the block back.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from spade_tf.memory import MAX_MMAP_THRESHOLD, release_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Freeing a mapped 30 MB block raises glibc's threshold to 30 MB; the next 24 MB block then comes
# from the heap, below a small block that stays. What freeing it gives back, in MB:
PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from spade_tf.memory import release_freed_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1e3

    if sys.argv[1] == "set":
        assert release_freed_memory()
    big = np.ones(30 << 20, np.uint8)
    del big
    block = np.ones(24 << 20, np.uint8)
    stays = np.ones(1 << 20, np.uint8)
    before = rss_mb()
    del block
    print(before - rss_mb())
""")


def _returned_mb(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting acts on glibc's malloc (Linux) only")
def test_freed_blocks_go_back_to_the_system_only_with_the_setting():
    without, with_setting = _returned_mb("default"), _returned_mb("set")
    assert without < 5, f"glibc's default kept the block? {without:.1f} MB came back"
    assert with_setting > 20, f"only {with_setting:.1f} MB of the 25 MB block came back"


@pytest.mark.parametrize("bad", [0, -1, MAX_MMAP_THRESHOLD + 1, True, 1.5, "131072"])
def test_threshold_is_validated(bad):
    with pytest.raises(ValueError, match="threshold_bytes"):
        release_freed_memory(bad)


def test_cli_flag_applies_the_setting(monkeypatch, capsys):
    import spade_tf.memory
    from spade_tf.cli import main

    calls = []
    monkeypatch.setattr(spade_tf.memory, "release_freed_memory", lambda: calls.append(1) or True)
    assert main(["--low-memory", "config", "--config", "tiny"]) == 0
    assert calls == [1]
    assert main(["config", "--config", "tiny"]) == 0
    assert calls == [1]
    capsys.readouterr()
