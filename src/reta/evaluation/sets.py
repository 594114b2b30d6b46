"""The one "load and check the set" step every evaluator starts from: seeds, the distilled set (checked against the
configured dataset, the protocol it was made for, the held-out split it was made with) and the IPC to evaluate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig

from reta.data.distilled import DistilledSet, load_distilled
from reta.data.holdout import check_holdout
from reta.errors import RetaError
from reta.utils.config import plain, require_positive_int

log = logging.getLogger(__name__)


@dataclass
class EvalInputs:
    """What an evaluator gets besides ``cfg``: the IPC (the set's own when a set is given), the student seeds, the
    held-out images per class (0 = score on test), the distilled set (None = the random baseline only) and its path."""

    ipc: int
    seeds: list[int]
    holdout: int
    distilled: DistilledSet | None
    source: str | None


def check_compatible(ds: DistilledSet, dataset_cfg: Mapping, source: str) -> None:
    """The distilled set must belong to the configured dataset (name, classes, image shape)."""
    expect = [dataset_cfg["channels"], dataset_cfg["image_size"], dataset_cfg["image_size"]]
    if ds.meta.get("dataset") != dataset_cfg["name"]:
        raise RetaError(
            f"distilled set {source} is for dataset {ds.meta.get('dataset')!r}, config says {dataset_cfg['name']!r}"
        )
    if ds.num_classes != dataset_cfg["num_classes"] or list(ds.images.shape[1:]) != expect:
        raise RetaError(
            f"distilled set {source}: {ds.num_classes} classes of {list(ds.images.shape[1:])}, "
            f"dataset {dataset_cfg['name']} has {dataset_cfg['num_classes']} of {expect}"
        )


def load_inputs(cfg: DictConfig) -> EvalInputs:
    """Load and check: ``seeds`` non-empty, ``ipc`` positive, the ``distilled`` set (when given) of this dataset and
    made with this ``holdout_per_class``; warns when the set was made for another protocol (``eval_protocol`` of its
    method config) and when the set's IPC replaces ``ipc``."""
    ipc = require_positive_int(cfg.ipc, "ipc")
    seeds = [int(s) for s in (cfg.seeds or [])]
    if not seeds:
        raise RetaError("seeds must be a non-empty list, e.g. seeds=[0,1,2]")
    holdout = check_holdout(cfg.get("holdout_per_class", 0))
    distilled, source = None, None
    if cfg.get("distilled"):
        source = str(cfg.distilled)
        distilled = load_distilled(source)
        check_compatible(distilled, plain(cfg.dataset), source)
        meant, name = (distilled.meta.get("method_config") or {}).get("eval_protocol"), cfg.protocol.get("name")
        if meant and meant != name:
            log.warning("the %s set was made for protocol=%s, evaluating with protocol=%s",
                        distilled.meta.get("method"), meant, name)
        made_with = int(distilled.meta.get("holdout_per_class") or 0)
        if holdout and made_with != holdout:
            raise RetaError(f"holdout_per_class={holdout} but the distilled set {source} was made with "
                            f"holdout_per_class={made_with}: it may contain held-out images; distil it with "
                            f"holdout_per_class={holdout}")
        if distilled.ipc != ipc:
            log.warning("ipc=%d overridden by the distilled set's ipc=%d", ipc, distilled.ipc)
            ipc = distilled.ipc
    return EvalInputs(ipc, seeds, holdout, distilled, source)
