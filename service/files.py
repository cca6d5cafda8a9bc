"""Files the server watches while it runs (the TLS certificates, the tokens file): has one changed?"""

from __future__ import annotations

import os
from pathlib import Path

Signature = tuple[int, int, int, int, int]


def signature(path: Path) -> Signature | None:
    """What changes when a file is rewritten in place or replaced (Kubernetes swaps a symlink, so the path
    reaches a new inode): device, inode, size, modification and change times. None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
