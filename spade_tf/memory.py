"""Process memory: a lower peak RSS by returning freed tensor memory to the system at once.

TensorFlow's CPU tensors come from the C allocator (glibc's malloc on Linux). glibc serves a
block of 128 KiB or more with its own ``mmap``, and gives it back on ``free``; but each time
such a block is freed it raises that threshold to the block's size (up to 32 MiB), so from the
first forward pass on, the generator's activations (up to 34 MB each at 256x256) come from the
heap, where freed blocks stay part of the process until they happen to lie at its top. The
peak RSS then grows with the calls: for the ade20k generator, 1.34 GB after the first call, 1.37
after 4 and 1.43 after 10 (docs/benchmarks/inference_memory.md), above about 0.62 GB of live
tensors and 0.56 GB of TensorFlow's import.

Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, the same as ``MALLOC_MMAP_THRESHOLD_`` in
the environment) stops the raising: every large block is mapped and unmapped, and the peak RSS
follows the live tensors (1.23 GB, the same after every call). The cost is a page fault per
4 KiB of every new large block: 212,000 instead of about 82,000 faults per ade20k forward, 0.85
instead of 0.35 s of system CPU time, and 3.44 instead of 2.80 s per call in that run. So it is
an option (``spade-tf --low-memory``), not the default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# glibc's largest accepted threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
DEFAULT_THRESHOLD = 128 * 1024  # glibc's initial value


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
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt"):
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes) != 1:
        raise ValueError(f"glibc refused mallopt(M_MMAP_THRESHOLD, {threshold_bytes})")
    return True
