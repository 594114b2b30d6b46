"""Reading the files of a cache entry (backbone weights and record, SFM statistics, golden heads): a missing, torn
or malformed file is one line naming the entry, the file and the way out (delete the entry; it is rebuilt on the next
run), never a FileNotFoundError / JSONDecodeError / unpickling traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reta.errors import CheckpointError, load_failure


def damaged(path: Path, why: str) -> CheckpointError:
    entry = Path(path).parent
    return CheckpointError(f"cache entry {entry} is damaged: {Path(path).name} {why}; delete {entry} and it is "
                           "rebuilt on the next run")


def read_json(path: str | Path) -> dict:
    """The JSON object in ``path`` of a cache entry."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise damaged(path, "is missing") from None
    except (OSError, ValueError) as err:
        raise damaged(path, f"cannot be read ({type(err).__name__})") from err
    if not isinstance(obj, dict):
        raise damaged(path, "is not a JSON object")
    return obj


def read_tensors(path: str | Path, check: Callable[[Any], bool] = lambda obj: True) -> Any:
    """``torch.load(path, weights_only=True)`` of a cache entry's file, which ``check`` must accept."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise damaged(path, "is missing") from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a torn or foreign file
        raise damaged(path, f"cannot be read: {load_failure(err)}") from err
    if not check(obj):
        raise damaged(path, "does not hold what reta wrote there")
    return obj
