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
blocks = [libc.malloc(24 << 20) for _ in range(8)]  # 8 x 24 MB: below the 32 MB mmap threshold, on the heap
for b in blocks:
    libc.memset(b, 1, 24 << 20)
for b in reversed(blocks):
    libc.free(b)
print(applied, libc.mallinfo2().fordblks >> 20)
"""


def free_heap_after_churn(mode: str, env: dict | None = None) -> tuple[bool, int]:
    """(applied, MiB left free in the heap) after 192 MB were allocated, touched and freed, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_memory_stays_for_reuse():
    applied, kept = free_heap_after_churn("keep")
    assert applied and kept >= 190  # all of it: the next tensors of that size need no fresh pages
    _, default_kept = free_heap_after_churn("default")
    assert default_kept < 64  # glibc's own rule hands most of it back (which makes the next touch fault)


def test_system_keeps_glibcs_defaults():
    applied, kept = free_heap_after_churn("keep", env={**os.environ, "VIVIT_MALLOC": "system"})
    assert not applied and kept < 64
