"""glibc malloc settings for a process that allocates the same large tensors over and over.

A ViViT-B forward on a CPU allocates and frees tensors of 5-150 MB in every block (qkv, the MLP hidden layer;
38 MB at 32 frames, 154 MB at batch 4). glibc maps each allocation of 32 MB or more (`M_MMAP_THRESHOLD` at its
largest) with its own `mmap` and unmaps it on free, and it returns freed memory at the top of its heap to the
system once more than `M_TRIM_THRESHOLD` is free (by default it follows the largest freed block); either way
the next block pays page faults and the kernel's zeroing to touch fresh memory again. Measured on an Intel Xeon
(2 cores): 7-9 % of a Model 2/3 forward at 16 frames (tensors under 32 MB, in `make bench`); ViViT-B Model 1
at 32 frames 4.3-4.7 s -> 3.9 s per clip at batch 1, 17.9 -> 16.6 s at batch 4 (an exact GELU on a 38 MB tensor
15-17 -> 4-6 ms). `keep_freed_memory` raises the trim threshold (freed memory stays for reuse, up to
`trim_mib` above the live set) and serves every allocation from the heap (`M_MMAP_MAX` = 0); the price is that
freed memory stays resident: at batch 4, 32 frames, the peak resident set rose from 1.27 to 1.96 GB.
The `vivit` commands apply it at start; library users may call it. `VIVIT_MALLOC=system` keeps glibc's
defaults. Other C libraries (musl, macOS, Windows): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>
ENV = "VIVIT_MALLOC"
_applied = False


def keep_freed_memory(trim_mib: int = 1024) -> bool:
    """Serve every allocation from the heap and keep up to `trim_mib` of freed memory there for reuse instead
    of returning it to the system (glibc only; once per process). True where the settings took effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "").strip().lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    _applied = bool(libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(trim_mib << 20))) and bool(
        libc.mallopt(M_MMAP_MAX, ctypes.c_int(0)))
    return _applied
