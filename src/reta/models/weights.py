"""Reading a weight file: weights-only, a plain state dict of tensors, every float tensor finite.

The one reader behind ``teacher.checkpoint`` / cached teachers (:func:`reta.training.teacher.load_state_dict_file`)
and ``pretrained_file`` (:func:`reta.models.build.build_model`, which hands the checked dict to timm as its
``pretrained_cfg`` ``state_dict`` source, so timm never unpickles the file itself)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from reta.errors import CheckpointError, load_failure


def read_state_dict(path: str | Path, what: str) -> dict:
    """The state dict in ``path`` (a state dict, ``{'state_dict': …}`` or a Lightning checkpoint), read with
    ``weights_only=True``; ``what`` names the file in the one-line :class:`CheckpointError` (missing, unreadable,
    not a plain state dict of tensors, NaN/inf weights)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise CheckpointError(f"{what} could not be read: {load_failure(err)}") from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{what} holds no state dict of tensors")
    bad = [k for k, v in obj.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a diverged or damaged model would be used silently (test accuracy at chance, exit 0)
        raise CheckpointError(f"{what} holds NaN/inf weights in {len(bad)} tensors (e.g. {bad[0]}); "
                              "use another file")
    return dict(obj)
