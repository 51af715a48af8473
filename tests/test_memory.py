"""The low-memory allocator setting (spade_tf.memory, ``spade-tf --low-memory``).

What it saves on the generator is measured by scripts/benchmark.py (and was by scripts/inference_memory.py of commit 953cabb); this
checks the mechanism: glibc keeps a freed block in the heap once its threshold was raised, and
with the setting it gives the block back.
"""

from __future__ import annotations

import json
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


# --- release_library_pages: TensorFlow's import-time code pages ---

SMAPS = textwrap.dedent("""\
    7f0000000000-7f0000004000 r-xp 00000000 08:01 11 /opt/lib/libgood.so.2
    Rss:                  12 kB
    Anonymous:             0 kB
    Locked:                0 kB
    7f0000004000-7f0000005000 rw-p 00004000 08:01 11 /opt/lib/libgood.so.2
    Rss:                   4 kB
    Anonymous:             4 kB
    Locked:                0 kB
    7f0000005000-7f0000006000 r--p 00005000 08:01 11 /opt/lib/libgood.so.2
    Rss:                   4 kB
    Anonymous:             4 kB
    Locked:                0 kB
    7f0000006000-7f0000008000 r--p 00000000 08:01 12 /opt/lib/mod.cpython-311-x86_64-linux-gnu.so
    Rss:                   8 kB
    Anonymous:             0 kB
    Locked:                0 kB
    7f0000008000-7f0000009000 r--p 00000000 08:01 13 /opt/lib/libgone.so (deleted)
    Rss:                   4 kB
    Anonymous:             0 kB
    Locked:                0 kB
    7f0000009000-7f000000a000 r--p 00000000 08:01 14 /data/weights.bin
    Rss:                   4 kB
    Anonymous:             0 kB
    Locked:                0 kB
    7f000000a000-7f000000b000 r-xp 00000000 08:01 15 /opt/lib/liblocked.so
    Rss:                   4 kB
    Anonymous:             0 kB
    Locked:                4 kB
    7f000000b000-7f000000c000 r-xp 00000000 08:01 16 /opt/lib/libcold.so
    Rss:                   0 kB
    Anonymous:             0 kB
    Locked:                0 kB
    7f000000c000-7f000000d000 r-xp 00000000 08:01 17 /opt/lib/libnofields.so
    7f000000d000-7f000000e000 rw-p 00000000 00:00 0
    Rss:                   4 kB
    Anonymous:             4 kB
    7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
    Rss:                   4 kB
    Anonymous:             0 kB
""")


def test_only_clean_read_only_library_mappings_are_chosen():
    from spade_tf.memory import _library_mappings

    chosen = _library_mappings(SMAPS)
    # not: the writable data, the relocated (copy-on-write) read-only part, a deleted file, a
    # data file, locked pages, nothing resident, unknown fields, anonymous memory, the vdso
    assert chosen == [
        (0x7f0000000000, 0x7f0000004000, "/opt/lib/libgood.so.2", 12 * 1024),
        (0x7f0000006000, 0x7f0000008000, "/opt/lib/mod.cpython-311-x86_64-linux-gnu.so", 8192),
    ]


# Imports TensorFlow, runs a conv, unmaps the library pages, runs it again: the resident file
# pages fall, and the results are the same bytes.
RELEASE_PROBE = textwrap.dedent("""
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    from spade_tf.memory import release_library_pages

    def rss_file():
        for line in open("/proc/self/status"):
            if line.startswith("RssFile"):
                return int(line.split()[1]) * 1024

    x = tf.random.stateless_normal((1, 32, 32, 8), seed=(1, 2))
    k = tf.random.stateless_normal((3, 3, 8, 16), seed=(3, 4))
    before = tf.nn.conv2d(x, k, 1, "SAME").numpy()
    file_before = rss_file()
    released = release_library_pages()
    file_after = rss_file()
    after = tf.nn.conv2d(x, k, 1, "SAME").numpy()
    print(json.dumps({"released": released, "file_before": file_before,
                      "file_after": file_after, "same": bool(np.array_equal(before, after))}))
""")


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/smaps (Linux only)")
def test_library_pages_are_unmapped_and_the_process_computes_the_same():
    out = subprocess.run([sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True,
                         check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["same"], "a conv gave other numbers after the library pages were unmapped"
    # TensorFlow's import alone maps about 0.3 GB of library pages
    assert r["released"] > 100e6, r
    assert r["file_before"] - r["file_after"] > 0.8 * r["released"], r


def test_cli_releases_library_pages_only_when_asked_and_for_model_commands(monkeypatch, capsys,
                                                                          tmp_path):
    """Opt-in (--release-library-pages): it lowers a peak-RSS figure without freeing memory
    that a tensor can use, so it is no default."""
    import spade_tf.memory
    from spade_tf.cli import MODEL_COMMANDS, main

    calls = []
    monkeypatch.setattr(spade_tf.memory, "release_library_pages", lambda: calls.append(1) or 0)
    missing = ["synthesize", "--model", str(tmp_path / "none"), "--labels", str(tmp_path),
               "--out", str(tmp_path / "out")]
    assert "synthesize" in MODEL_COMMANDS
    assert main(missing) == 2  # the model is missing; nothing released by default
    assert calls == []
    assert main(["--release-library-pages", *missing]) == 2
    assert calls == [1]
    assert main(["--release-library-pages", "config", "--config", "tiny"]) == 0  # no model
    assert calls == [1]
    capsys.readouterr()
