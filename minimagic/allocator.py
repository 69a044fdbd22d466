"""glibc's malloc set up for PyTorch on a CPU: freed activation buffers stay in the process.

By default glibc gives every large block its own mmap and returns it to the system when freed (munmap,
heap trimming), and the next operation page-faults the same memory in again: encoding clips with the VAE
spent as much time in the kernel as in PyTorch. `configure()` makes glibc serve every block from its heap
and keep up to 1 GiB free there, once per process (the CLI, `train.train` and notebooks call it;
`MINIMAGIC_ALLOCATOR=0` turns it off; `bench/allocator.py` measures it). Elsewhere than glibc it does
nothing; jemalloc or tcmalloc, where installed, do the same job through LD_PRELOAD.
"""

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # mallopt's parameters (malloc.h)
SETTINGS = {
    M_MMAP_MAX: 0,  # every block comes from the heap, where a freed one is reused, none from its own mmap
    M_TRIM_THRESHOLD: 1 << 30,  # give memory back to the system only when 1 GiB is free at the heap's top
    M_TOP_PAD: 64 << 20,  # grow the heap 64 MiB at a time
}
applied: dict[int, int] = {}  # the settings this process runs with


def configure() -> bool:
    """Apply SETTINGS through mallopt (once); False when turned off or not on glibc."""
    if os.environ.get("MINIMAGIC_ALLOCATOR", "1") == "0":
        return False
    if applied:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    for parameter, value in SETTINGS.items():
        if mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
            applied[parameter] = value
    return bool(applied)
