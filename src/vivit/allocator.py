"""glibc malloc settings for a process that allocates the same large tensors over and over.

A ViViT-B forward on a CPU allocates and frees tensors of 5-20 MB in every block (qkv, the MLP hidden layer).
glibc returns freed memory at the top of its heap to the system once more than `M_TRIM_THRESHOLD` is free
(by default it follows the largest freed block, a few tens of MB), so the next block pays page faults to
touch fresh memory again: measured 7-9 % of a Model 2/3 forward on an Intel Xeon (2 cores), in `make bench`.
`keep_freed_memory` raises the trim threshold (freed memory stays for reuse, up to `trim_mib` above the
live set) and fixes the mmap threshold at glibc's largest (32 MB), which turns off glibc's adjusting it.
The `vivit` commands apply it at start; library users may call it. `VIVIT_MALLOC=system` keeps glibc's
defaults. Other C libraries (musl, macOS, Windows): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, <malloc.h>
ENV = "VIVIT_MALLOC"
_applied = False


def keep_freed_memory(trim_mib: int = 1024, mmap_mib: int = 32) -> bool:
    """Keep up to `trim_mib` of freed heap memory for reuse instead of returning it to the system (glibc
    only; once per process). True where the settings took effect."""
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
        libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_mib << 20)))
    return _applied
