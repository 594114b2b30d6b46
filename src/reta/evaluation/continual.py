"""Class-incremental continual learning with a distilled set as the replay memory (``protocol=continual``; DM, Zhao &
Bilen WACV 2023, VICO-UoE/DatasetCondensation ``CL_DM.py``; RETA Fig. 6; docs/evaluation.md).

The classes are split into ``steps`` equal groups by a class order (a seeded permutation, ``np.random.RandomState(s)
.permutation(C)`` as CL_DM.py's ``np.random.seed(s); np.random.permutation(C)``, or a fixed list). At step k the
memory is the set's images of the classes of steps 0…k (``budget`` images per class), and a student trained on it is
tested on the test images of exactly those classes, with the argmax over all C outputs:

- ``mode: fresh`` (CL_DM.py, GDumb-style): a fresh student from scratch at every step;
- ``mode: continue``: the step-k student starts from the step-(k−1) student's weights (IDC's ``continual-learning/``
  continues its model; its LwF-style distillation loss is not included here).

The per-step student follows the protocol's own student keys (``continual.yaml``: those of ``hard``, as CL_DM.py;
``continual_kd.yaml``: those of ``kd``); a KD student's teacher has seen every
class, so its logits of the classes not seen yet are masked out (−1e4 before the softmax: probability 0), the
"mask the unseen logits and renormalise" option — the teacher's features still come from all classes.

The same protocol runs on a random real buffer of equal size (``budget`` random training images per seen class).
"""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from reta.data.base import ImageDataset, TensorImageDataset
from reta.data.expansion import training_view
from reta.data.holdout import split_holdout
from reta.data.registry import load_split, sample_per_class
from reta.errors import RetaError
from reta.evaluation import protocol_values
from reta.evaluation.metrics import metrics_record
from reta.evaluation.sets import EvalInputs
from reta.evaluation.student_cache import cached_run
from reta.evaluation.students import (
    check_protocol,
    labelling_teacher,
    random_student_key,
    set_protocol,
    student_kwargs,
    teacher_record,
    train_student,
)
from reta.training.common import configure_data, set_threads
from reta.training.student import Protocol
from reta.utils.config import plain
from reta.utils.schema import parse

log = logging.getLogger(__name__)

MODES = ("fresh", "continue")


@dataclass(frozen=True)
class ContinualSpec:
    """The ``protocol.continual`` block (every field set in ``conf/protocol/continual*.yaml``)."""

    steps: int
    class_order: list[int] | None  # null = a permutation seeded by each evaluation seed
    mode: str
    budget: int | None  # images per class in the memory; null = the set's IPC

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise RetaError(f"protocol.continual.steps must be a positive integer, got {self.steps}")
        if self.mode not in MODES:
            raise RetaError(f"protocol.continual.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.budget is not None and self.budget <= 0:
            raise RetaError(f"protocol.continual.budget must be a positive integer or null, got {self.budget}")

    @classmethod
    def from_cfg(cls, cfg: Any) -> ContinualSpec:
        return parse(cls, cfg, "protocol.continual")


def class_order(spec: ContinualSpec, num_classes: int, seed: int) -> list[int]:
    """The fixed order, or CL_DM.py's permutation of ``num_classes`` seeded by ``seed``."""
    if spec.class_order is not None:
        return list(spec.class_order)
    return [int(c) for c in np.random.RandomState(int(seed)).permutation(num_classes)]


def step_split(order: list[int], steps: int, num_classes: int) -> list[list[int]]:
    """``order`` cut into ``steps`` equal groups; the order must be a permutation of the set's classes."""
    if sorted(order) != list(range(num_classes)):
        raise RetaError(f"protocol.continual.class_order {order} is not a permutation of the set's {num_classes} "
                        f"classes 0..{num_classes - 1}")
    if num_classes % steps:
        raise RetaError(f"protocol.continual.steps={steps} does not divide the {num_classes} classes into equal steps; "
                        f"valid: {', '.join(str(s) for s in range(1, num_classes + 1) if num_classes % s == 0)}")
    size = num_classes // steps
    return [order[k * size:(k + 1) * size] for k in range(steps)]


def check_spec(cfg: Any, num_classes: int, seeds: list[int]) -> dict[int, list[list[int]]]:
    """The ``protocol.continual`` block and every seed's step split, checked with no data loaded."""
    spec = cfg if isinstance(cfg, ContinualSpec) else ContinualSpec.from_cfg(cfg)
    return {int(s): step_split(class_order(spec, num_classes, int(s)), spec.steps, num_classes) for s in seeds}


def student_protocol(cfg: DictConfig) -> tuple[ContinualSpec, Protocol]:
    """The ``continual`` block and the per-step student's protocol (the other keys of the protocol config)."""
    values = protocol_values(cfg.protocol)
    spec = ContinualSpec.from_cfg(values.pop("continual", None))
    return spec, Protocol.from_cfg(values)


def check_settings(cfg: DictConfig) -> None:
    """The evaluator's own no-data checks (run in the stage's preflight): the block, the per-step protocol and every
    seed's step split."""
    spec, protocol = student_protocol(cfg)
    check_protocol(cfg, protocol)
    check_spec(spec, int(cfg.dataset.num_classes), [int(s) for s in cfg.seeds])


def memory_indices(labels: torch.Tensor, classes: list[int], budget: int) -> torch.Tensor:
    """The first ``budget`` images (in stored order) of each class of ``classes``."""
    picks = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) < budget:
            raise RetaError(f"the memory needs {budget} images of class {c}, the set has {len(idx)}")
        picks.append(idx[:budget])
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def class_subset(ds: ImageDataset, classes: list[int]) -> TensorImageDataset:
    """The images of ``ds`` whose label is in ``classes`` (labels unchanged), as uint8 in memory."""
    idx = torch.isin(ds.targets, torch.tensor(classes)).nonzero().flatten()
    images = (ds.gather(idx) * 255).round().to(torch.uint8)
    names = list(getattr(ds, "class_names", None) or [str(i) for i in range(int(ds.targets.max()) + 1)])
    return TensorImageDataset(images, ds.targets[idx].clone(), names)


class SeenClassesTeacher(nn.Module):
    """A frozen teacher whose logits of the classes outside ``seen`` are −1e4 (softmax probability 0)."""

    def __init__(self, teacher: nn.Module, seen: list[int], num_classes: int) -> None:
        super().__init__()
        self.teacher = teacher
        mask = torch.ones(num_classes, dtype=torch.bool)
        mask[torch.tensor(seen)] = False
        self.register_buffer("unseen", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x).masked_fill(self.unseen, -1e4)


TrainFn = Callable[..., dict]


def run_steps(images: torch.Tensor, labels: torch.Tensor, splits: list[list[int]], budget: int, test: ImageDataset,
              train_fn: TrainFn, seed: int, mode: str, run_name: str,
              expand: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
              teacher: nn.Module | None = None, num_classes: int | None = None) -> list[dict]:
    """One student per step on the memory of the classes seen so far, tested on exactly those classes.
    ``train_fn(images, labels, test=…, seed=…, run_name=…, init_state=…, after_fit=…[, teacher=…])`` returns the
    run's dict; a ``teacher`` is passed on masked to the classes seen so far (:class:`SeenClassesTeacher`)."""
    out, seen, state = [], [], None
    for k, new in enumerate(splits):
        seen = seen + list(new)
        idx = memory_indices(labels, seen, budget)
        mem_x, mem_y = images[idx], labels[idx]
        if expand is not None:
            mem_x, mem_y = expand(mem_x, mem_y)
        extra = {} if teacher is None else {"teacher": SeenClassesTeacher(teacher, seen, int(num_classes))}
        r = train_fn(mem_x, mem_y, test=class_subset(test, seen), seed=seed, run_name=f"{run_name}_step{k}",
                     init_state=state if mode == "continue" else None,
                     after_fit=(lambda m: {"state": copy.deepcopy(m.state_dict())}) if mode == "continue" else None,
                     **extra)
        state = r.pop("state", None)
        out.append({"step": k, "classes": list(seen), "memory_size": int(len(idx)), "acc_last": r["acc_last"],
                    "acc_best": r["acc_best"], "seconds": r["seconds"]})
        log.info("%s step %d: %d classes, memory %d, acc %.4f", run_name, k, len(seen), len(idx), r["acc_last"])
    return out


def summarize_steps(per_seed: list[list[dict]]) -> list[dict]:
    """Per step: the classes seen (of the first seed's order), their number, the memory size, and the accuracy on
    the seen classes, per seed and mean ± population std over seeds."""
    rows = []
    for k in range(len(per_seed[0])):
        accs = [runs[k]["acc_last"] for runs in per_seed]
        rows.append({"step": k, "n_classes": len(per_seed[0][k]["classes"]),
                     "classes": [runs[k]["classes"] for runs in per_seed],
                     "memory_size": per_seed[0][k]["memory_size"], "acc_last": accs,
                     "acc_mean": statistics.fmean(accs), "acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0})
    return rows


def evaluate(cfg: DictConfig, inputs: EvalInputs) -> dict:
    """The evaluator of ``protocol=continual`` and ``protocol=continual_kd`` (:mod:`reta.evaluation`): the distilled
    set (``distilled=DIR``) and the random real buffer of the same size as replay memories, one class order per seed,
    the per-step students of :func:`reta.evaluation.students.train_student`. ``metrics.json`` holds per set the last
    step's accuracy as ``acc_*`` and the ``steps`` list."""
    spec, protocol = student_protocol(cfg)
    ds_cfg = plain(cfg.dataset)
    C, distilled = int(ds_cfg["num_classes"]), inputs.distilled
    if not cfg.get("baseline", True) and distilled is None:
        raise RetaError("nothing to evaluate: baseline=false and no distilled=DIR given")
    budget = spec.budget or inputs.ipc
    if distilled is not None and budget > distilled.ipc:
        raise RetaError(f"protocol.continual.budget={budget} exceeds the set's {distilled.ipc} images per class")
    splits = check_spec(spec, C, inputs.seeds)  # every seed's split, before any work
    set_threads(cfg.get("num_threads"))
    configure_data(cfg)
    full_train, full_test = (load_split(cfg.dataset, s, cfg.paths.data_dir) for s in ("train", "test"))
    # masked to the seen classes at every step
    teacher, teacher_meta = labelling_teacher(cfg, protocol, full_train, full_test)
    train, held_out = split_holdout(full_train, inputs.holdout)
    test = held_out if held_out is not None else full_test
    eval_split = f"holdout{inputs.holdout}" if inputs.holdout else "test"
    common = student_kwargs(cfg, protocol, test, None)

    def train_fn(images, labels, **kw):
        return train_student(images, labels, **{**common, **kw})

    def set_train_fn(images, labels, **kw):  # the distilled set's steps: its own lr under lr_source=set
        return train_fn(images, labels, protocol=set_protocol(protocol, distilled.meta), **kw)

    per_set: dict[str, list[list[dict]]] = {}
    for seed in inputs.seeds:
        if cfg.get("baseline", True):
            def fit(seed: int = seed) -> dict:
                idx = sample_per_class(train.targets, C, budget, seed)
                return {"steps": run_steps(train.gather(idx), train.targets[idx], splits[seed], budget, test, train_fn,
                                           seed, spec.mode, f"random_seed{seed}", teacher=teacher, num_classes=C)}

            # the random buffer's steps are the same runs in every job of a grid: trained once (baseline_cache)
            key = {**random_student_key(cfg, protocol, budget, seed, eval_split, teacher_meta),
                   "continual": asdict(spec), "splits": splits[seed]}
            r = cached_run(cfg.paths.cache_dir, "random_students", key, fit, cfg.baseline_cache)
            if "cached" in r:  # on the last step, the run metrics_record summarises
                r["steps"][-1]["cached"] = r["cached"]
            per_set.setdefault("random", []).append(r["steps"])
        if distilled is not None:
            per_set.setdefault("distilled", []).append(run_steps(
                distilled.images.float(), distilled.labels, splits[seed], budget, test, set_train_fn, seed, spec.mode,
                f"distilled_seed{seed}", expand=lambda x, y: training_view(x, y, distilled.meta), teacher=teacher,
                num_classes=C))
    metrics = metrics_record(
        cfg, replace(inputs, ipc=budget), {name: [runs[-1] for runs in per_seed] for name, per_seed in per_set.items()},
        protocol=str(cfg.protocol.name),
        protocol_config={**asdict(protocol), "continual": asdict(spec)},
        student=common["student_cfg"]["name"],
        student_config=common["student_cfg"],
        teacher=teacher_record(teacher_meta),
        expansion=distilled.meta.get("expansion", "none") if distilled is not None else "none",
        eval_split=eval_split,
    )
    for name, per_seed in per_set.items():
        metrics["sets"][name]["steps"] = summarize_steps(per_seed)
    return metrics


evaluate.preflight = check_settings
