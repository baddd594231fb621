"""Small helpers on files and contents that several layers share."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def array_key(array) -> bytes:
    """A key for a NumPy array's contents: a 128-bit hash of its bytes, its shape and its type
    (the shared trunk's cache keys batches by it; the figure's cards, inputs)."""
    import numpy as np

    a = np.ascontiguousarray(array)
    digest = hashlib.blake2b(memoryview(a).cast("B"), digest_size=16)
    digest.update(repr((a.shape, a.dtype.str)).encode())
    return digest.digest()


def folder_sha256(folder: Path) -> str:
    """The hex sha256 of a folder's files (each relative path and its sha256, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256(path)}\n".encode())
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so that a reader (or a run resumed after a kill) sees the old
    file or the whole new one, never a part: a temporary file beside it, then a rename."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a report from its readers
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
