"""Numba kernels over flat state arrays.

Numba re-validates a cached kernel only against its own source file, not against the kernels it
calls or the layout constants it reads from other modules; a stale cache then runs old code on a
new layout (wrong columns, even crashes). So unless NUMBA_CACHE_DIR is set, kernels cache under a
folder named by a hash of all kernel sources: any kernel change starts a fresh cache.
"""

import hashlib
import os
import tempfile
from pathlib import Path


def _cache_dir() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for root in (base, tempfile.gettempdir()):
        folder = os.path.join(root, "streamad-numba", digest.hexdigest()[:16])
        try:
            os.makedirs(folder, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    return ""


if not os.environ.get("NUMBA_CACHE_DIR"):
    import numba

    _dir = _cache_dir()
    if _dir:
        numba.config.CACHE_DIR = _dir
