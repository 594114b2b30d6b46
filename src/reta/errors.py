"""One exception type for every user-facing error.

Entry points catch :class:`RetaError`, print its message as one line on stderr and exit with status 2,
so bad input never produces a traceback wall or a half-written artifact.
"""

from __future__ import annotations

import errno
import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"unsupported GLOBAL (\S+)")


#: torch's DataLoader re-raises a worker's exception as ``type(msg)`` with the worker's whole traceback in ``msg``
_WORKER = re.compile(r"^Caught \w+ (in DataLoader worker process \d+)\.\s*\nOriginal Traceback.*\n[\w.]+: (.+?)\s*$",
                     re.S)


class RetaError(Exception):
    """An error caused by the user's input (config, dataset location, checkpoint); message is one line (a message
    re-raised from a DataLoader worker keeps the worker's own line, not its traceback)."""

    def __init__(self, message: str) -> None:
        text = str(message)
        worker = _WORKER.match(text)
        if worker:
            text = f"{worker.group(2).splitlines()[-1]} ({worker.group(1)})"
        super().__init__(" ".join(text.split()))


class DatasetNotFoundError(RetaError):
    """The dataset files are not where the config says; the message says how to get them."""


class CheckpointError(RetaError):
    """A checkpoint file is missing, corrupt, or does not fit the model / dataset."""


class NonFiniteLossError(RetaError):
    """A loss term became NaN or inf; the message names the term."""


class DivergenceError(RetaError):
    """A synthesis run diverged with finite losses (e.g. every pixel pushed to 0 or 1); the message names the loss
    term that grew most and the last good checkpoint."""


def load_failure(err: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, as a short phrase for a one-line error: pickled code is named
    as such (torch's own message spans paragraphs, carries terminal escapes in some versions and suggests
    ``weights_only=False``, which reta never does), a torn file as truncated or corrupt, else the first line."""
    text = _ANSI.sub("", str(err)).strip()
    if "Weights only load failed" in text or type(err).__name__ == "UnpicklingError":
        found = _GLOBAL.search(text)
        what = f" ({found.group(1)})" if found else ""
        return f"it holds pickled Python objects{what}, which reta refuses to load; only tensors are accepted"
    if ("central directory" in text or "corrupted" in text or "not a ZIP archive" in text or isinstance(err, EOFError)
            or (isinstance(err, OSError) and err.errno == errno.EINVAL)):  # torch's zip reader on a torn file
        return "the file is truncated or corrupt"
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
