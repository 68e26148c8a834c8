"""Writing files so that a reader never sees half of one: write beside, then rename."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_open(path: Path | str, newline: str | None = None) -> Iterator[IO[str]]:
    """Open `path.tmp` for writing; on success it replaces `path` in one step (os.replace
    is atomic on POSIX), on error it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline=newline) as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write `text` to `path` atomically (see atomic_open)."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)
