"""Running a user's Python file (an objective file, a task file) as a module: whatever
goes wrong is one line of the caller's error type, never a traceback."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_python_file(path: Path, shown: str, kind: str, error: type[Exception]) -> ModuleType:
    """`path` run as a module named after `kind` and its stem; `error(one line)` when it is
    not a Python file, does not compile, or raises while it loads.

    >>> load_python_file(Path("missing.txt"), "missing.txt", "task", ValueError)
    Traceback (most recent call last):
    ...
    ValueError: missing.txt is not a Python file: a task file is a .py file
    """
    spec = importlib.util.spec_from_file_location(f"tuneloop_{kind}_{path.stem}", path)
    if spec is None or spec.loader is None:  # Python loads no such file (e.g. not .py)
        raise error(f"{shown} is not a Python file: {'an' if kind[0] in 'aeiou' else 'a'} {kind} file is a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise error(f"{shown} does not compile: line {e.lineno}: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - whatever the file raised, the user needs one line
        raise error(f"{shown} failed when loaded: {type(e).__name__}: {e}") from None
    return module
