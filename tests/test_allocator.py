"""The allocator setting of the vivit commands: freed heap memory stays for the next block's tensors."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")

PROBE = """
import ctypes, sys
from vivit.allocator import keep_freed_memory

class Mallinfo2(ctypes.Structure):  # <malloc.h> struct mallinfo2
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
size = int(sys.argv[2]) << 20
mapped_before = libc.mallinfo2().hblks  # what importing mapped
blocks = [libc.malloc(size) for _ in range(8)]
for b in blocks:
    libc.memset(b, 1, size)
mapped = libc.mallinfo2().hblks - mapped_before  # blocks that got their own mmap
for b in reversed(blocks):
    libc.free(b)
print(applied, libc.mallinfo2().fordblks >> 20, mapped)
"""


def free_heap_after_churn(mode: str, mib: int = 24, env: dict | None = None) -> tuple[bool, int, int]:
    """(applied, MiB left free in the heap, blocks mapped apart) after 8 blocks of `mib` MB were allocated,
    touched and freed, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(mib)], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


def test_freed_memory_stays_for_reuse():
    applied, kept, _ = free_heap_after_churn("keep")  # 8 x 24 MB: under glibc's mmap threshold, on the heap
    assert applied and kept >= 190  # all of it: the next tensors of that size need no fresh pages
    _, default_kept, _ = free_heap_after_churn("default")
    assert default_kept < 64  # glibc's own rule hands most of it back (which makes the next touch fault)


def test_large_tensors_come_from_the_heap_too():
    applied, kept, mapped = free_heap_after_churn("keep", mib=48)  # 48 MB: over glibc's largest mmap threshold
    assert applied and mapped == 0 and kept >= 380
    _, default_kept, default_mapped = free_heap_after_churn("default", mib=48)
    assert default_mapped == 8 and default_kept < 64  # each its own mapping, unmapped (and paged in anew) each time


def test_system_keeps_glibcs_defaults():
    applied, kept, _ = free_heap_after_churn("keep", env={**os.environ, "VIVIT_MALLOC": "system"})
    assert not applied and kept < 64
