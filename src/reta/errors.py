"""One exception type for every user-facing error.

Entry points catch :class:`RetaError`, print its message as one line on stderr and exit with status 2,
so bad input never produces a traceback wall or a half-written artifact.
"""

from __future__ import annotations


class RetaError(Exception):
    """An error caused by the user's input (config, dataset location, checkpoint); message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class DatasetNotFoundError(RetaError):
    """The dataset files are not where the config says; the message says how to get them."""


class CheckpointError(RetaError):
    """A checkpoint file is missing, corrupt, or does not fit the model / dataset."""


class NonFiniteLossError(RetaError):
    """A loss term became NaN or inf; the message names the term."""
