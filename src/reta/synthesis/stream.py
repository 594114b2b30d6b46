"""The batches a synthesis fit loop iterates: step (or iteration) indices ``start … total−1``.

Every synthesis family runs under a Lightning Trainer whose "data" is this stream: one batch = one optimiser step of
the synthetic images. A resumed run starts the stream at its saved step, so the fit loop continues where it stopped.
"""

from __future__ import annotations

import torch


class StepStream(torch.utils.data.IterableDataset):
    """Step indices ``start … total−1`` — the fit loop's batches."""

    def __init__(self, start: int, total: int) -> None:
        self.start, self.total = int(start), int(total)

    def __iter__(self):
        return iter(range(self.start, self.total))

    def __len__(self) -> int:
        return self.total - self.start
