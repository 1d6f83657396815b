"""Keep argon2id's working memory out of the long-lived heap.

Every password check allocates one 19 MiB block (see ``squall.auth.passwords``). glibc serves a
block that large with mmap and unmaps it on free — but after the first such free it raises its
mmap threshold to the block's size, so later 19 MiB blocks come from a heap arena and stay
resident when freed, one per thread that ever hashed. On a small PDS that is +20–40 MB of idle
RSS after a few logins. Pinning the threshold at glibc's default (128 KiB) turns the dynamic
adjustment off: large blocks are mapped and returned to the system, as on the first call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold; True when applied (False on other C libraries)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
