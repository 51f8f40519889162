"""The agent process's own settings: how glibc's malloc keeps the agent's RSS small."""

from __future__ import annotations

import ctypes

M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # mallopt(3) parameters, from <malloc.h>
MALLOC_ARENAS = 1
MALLOC_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, fixed


def tune_malloc() -> bool:
    """Keep glibc's malloc from holding freed memory; False where that is not glibc (no change).

    Two habits of glibc cost the agent RSS, 7 MB at 60 targets. Each thread that allocates while
    another holds the main arena gets an arena of its own and keeps what was freed there (the
    worker threads of the spool, the sources and status.json each held megabytes of batch
    buffers): one arena for all, as the threads run one at a time under the GIL anyway. And after
    a large block is freed glibc raises its mmap threshold to that size, so the next batch's
    buffers come from the heap and fragment it: a fixed threshold keeps large blocks mmapped and
    returned on free.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all([mallopt(M_ARENA_MAX, MALLOC_ARENAS), mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)])
