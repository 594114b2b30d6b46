"""Stage-wise image grids of the synthetic batch, for loggers that take images (W&B).

At the end of every synthesis stage of the watched IPC slots, the job's working batch (one image per class of the
job, normalised space) is denormalised to [0, 1], tiled with :func:`torchvision.utils.make_grid` and sent to
``logger.log_image`` under ``stages/slot<k>`` with the stage and resolution as caption, so a researcher can watch the
images move from the real-patch initialisation through each residual connection. Runs before the residual callback
(:func:`reta.synthesis.bn.family.build_synthesis` puts it first), so it shows the optimised pixels, not the merge.
Loggers without ``log_image`` (CSV) are skipped; nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torchvision.utils import make_grid

from reta.data.augment import denormalize
from reta.errors import RetaError
from reta.synthesis.bn.anchors import StageEnd


class StageImageGrid(L.Callback):
    """Log ``stages/slot<k>`` grids at every stage end of the IPC slots in ``slots`` (``None`` = every slot)."""

    def __init__(self, slots: Sequence[int] | None = (0,), nrow: int = 10) -> None:
        if slots is not None and (
            isinstance(slots, (str, bytes)) or not all(isinstance(s, int) and s >= 0 for s in slots)
        ):
            raise RetaError(f"stage image slots must be a list of non-negative ints or null, got {slots!r}")
        if not isinstance(nrow, int) or nrow < 1:
            raise RetaError(f"stage image nrow must be a positive int, got {nrow!r}")
        self.slots = None if slots is None else {int(s) for s in slots}
        self.nrow = nrow
        self.logged: list[str] = []  # captions sent, for tests and the run summary

    def on_synthesis_stage_end(self, trainer, module, event: StageEnd) -> None:
        logger = getattr(trainer, "logger", None) if trainer is not None else None
        if logger is None or not hasattr(logger, "log_image"):
            return
        if self.slots is not None and event.slot not in self.slots:
            return
        with torch.no_grad():
            pixels = denormalize(event.images.float(), module.mean, module.std).clamp_(0.0, 1.0).cpu()
            grid = make_grid(pixels, nrow=min(self.nrow, len(pixels)), padding=1, pad_value=1.0)
        caption = f"job {event.job} slot {event.slot} stage {event.stage} ({event.size}px)"
        logger.log_image(key=f"stages/slot{event.slot}", images=[grid], caption=[caption],
                         step=int(getattr(module, "next_step", 0)))
        self.logged.append(caption)
