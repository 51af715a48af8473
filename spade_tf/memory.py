"""Process memory: a lower peak RSS, by returning freed tensor memory to the system at once and by
unmapping the library pages that TensorFlow's import touched and no longer runs.

TensorFlow's CPU tensors come from the C allocator (glibc's malloc on Linux). glibc serves a
block of 128 KiB or more with its own ``mmap``, and gives it back on ``free``; but each time
such a block is freed it raises that threshold to the block's size (up to 32 MiB), so from the
first forward pass on, the generator's activations (up to 34 MB each at 256x256) come from the
heap, where freed blocks stay part of the process until they happen to lie at its top. The
peak RSS then grows with the calls: for the ade20k generator (library pages kept, below), 1.34
GB after the first call, 1.37 after 4 and 1.43 after 10 (an earlier run), above about 0.62 GB of
live tensors and 0.56 GB of TensorFlow's import.

Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, the same as ``MALLOC_MMAP_THRESHOLD_`` in
the environment) stops the raising: every large block is mapped and unmapped, and the peak RSS
follows the live tensors (1.23 GB, the same after every call). The cost is a page fault per
4 KiB of every new large block: 212,000 instead of about 82,000 faults per ade20k forward, 0.85
instead of 0.35 s of system CPU time, and 3.44 instead of 2.80 s per call in that run. So it is
an option (``spade-tf --low-memory``), not the default.

The second part of the peak is TensorFlow's own code. ``import tensorflow`` touches about 0.32 GB
of its shared libraries' pages (mostly libtensorflow_cc: the registration of every op, kernel
and gradient), and they stay mapped in the process, counted in its RSS, although building,
tracing and running a model need only about 0.06 GB of them again. ``release_library_pages``
unmaps the clean pages of the loaded libraries (``madvise(MADV_DONTNEED)``); whatever is used
later is mapped again from the page cache by a minor fault. That is not free memory for the
process to use, and not a smaller TensorFlow: it stops the process from holding code it no
longer runs, as the kernel would take it under memory pressure. It lowers a peak-RSS figure,
not the memory a model can use, so the CLI does it only when asked
(``spade-tf --release-library-pages``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# glibc's largest accepted threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
DEFAULT_THRESHOLD = 128 * 1024  # glibc's initial value
MADV_DONTNEED = 4  # Linux's mman.h
# a shared library: libfoo.so, libfoo.so.2, mod.cpython-311-x86_64-linux-gnu.so
_SHARED_LIBRARY = re.compile(r"\.so(\.\d+)*$")
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_freed_memory(threshold_bytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fixes glibc's mmap threshold, so that freed blocks of ``threshold_bytes`` or more go
    back to the system at once (see the module docstring).

    Acts on the whole process and on allocations made after the call; call it before building
    models. Returns False, changing nothing, where the C library is not glibc (macOS, musl),
    and raises ValueError for a threshold glibc does not accept.
    """
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) \
            or not 0 < threshold_bytes <= MAX_MMAP_THRESHOLD:
        raise ValueError(f"threshold_bytes={threshold_bytes!r}: give an integer from 1 to "
                         f"{MAX_MMAP_THRESHOLD} (glibc's maximum)")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = _libc()
    if not hasattr(libc, "mallopt"):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes) != 1:
        raise ValueError(f"glibc refused mallopt(M_MMAP_THRESHOLD, {threshold_bytes})")
    return True


def _library_mappings(smaps_text):
    """The mappings of ``/proc/PID/smaps`` text that can be unmapped without changing what the
    process reads: a shared library's file (not deleted), not writable, holding no private
    (copy-on-write) page and no locked page. Returns [(start, end, path, rss_bytes)]."""
    out, current = [], None
    for line in smaps_text.splitlines():
        m = _MAPPING.match(line)
        if m:
            start, end, perms, path = int(m[1], 16), int(m[2], 16), m[3], m[4].strip()
            current = {"start": start, "end": end, "path": path,
                       "ok": path.startswith("/") and bool(_SHARED_LIBRARY.search(path))
                       and "w" not in perms}
            out.append(current)
        elif current is not None and ":" in line:
            key, value = line.split(":", 1)
            if key in ("Rss", "Anonymous", "Locked"):
                current[key] = int(value.split()[0]) * 1024  # kB
    # a field missing from smaps counts as "not known to be safe"
    return [(c["start"], c["end"], c["path"], c["Rss"]) for c in out
            if c["ok"] and c.get("Anonymous", 1) == 0 and c.get("Locked", 1) == 0
            and c.get("Rss", 0) > 0]


def release_library_pages() -> int:
    """Unmaps the resident pages of the loaded shared libraries that the process can read again
    from their files (see the module docstring): TensorFlow's import-time code, about 0.26 GB
    of peak RSS for ade20k inference and training.

    Only read-only mappings of ``.so`` files with no copy-on-write and no locked page are
    touched, so the process reads the same bytes afterwards; pages it still uses come back by
    minor faults. Call it after the imports and before building models (the pages touched
    later stay). Returns the bytes unmapped; 0, changing nothing, where ``/proc/self/smaps`` or
    ``madvise`` is missing (not Linux).
    """
    if platform.system() != "Linux":
        return 0
    try:
        with open("/proc/self/smaps") as f:
            mappings = _library_mappings(f.read())
    except OSError:
        return 0
    libc = _libc()
    if not hasattr(libc, "madvise"):
        return 0
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.madvise.restype = ctypes.c_int
    released = 0
    for start, end, _path, rss in mappings:
        # a mapping that fails (e.g. unmapped since the read) is left as it is
        if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
            released += rss
    return released
