"""The inputs of RETA's topology diagnostics for a finished run: the run's config, its reference teacher, the real
pool and the per-class feature clouds (real pool vs distilled images) that :mod:`reta.reporting.topology_plots`
turns into Betti curves and persistence images (``reta-report topology.run_dir=RUN_DIR``).

Per class c (docs/methods.md §4.2, the same graph/diagram/image code as PTA, :mod:`reta.topology`): **features** are
the L2-normalised penultimate features of the reference teacher (the method's first teacher, else the run's
``model``), eval mode, from the teacher cache; the **synthetic cloud** is the IPC images of class c in the distilled
set; the **real pool** is the teacher-scored crop list of the real-patch initialisation (the DRC/PTA pool, cached under
``paths.cache_dir``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from reta.data.augment import normalize
from reta.data.distilled import load_distilled
from reta.data.registry import load_split
from reta.errors import RetaError
from reta.models import features
from reta.synthesis.bn.family import teacher_specs
from reta.synthesis.bn.init import cached_patch_pool, teacher_id
from reta.topology.loss import TopologyConfig
from reta.training.teacher_cache import TeacherLoader
from reta.utils.config import plain

#: PTA settings the diagnostics take from the run's ``method.callbacks.pta`` (the rest are TopologyConfig defaults)
TOPO_KEYS = tuple(f.name for f in dataclasses.fields(TopologyConfig))


def locate(run_dir: str | Path) -> tuple[Path, Path]:
    """(run dir, distilled dir) from either of them."""
    d = Path(run_dir)
    if (d / "meta.json").is_file():
        return d.parent, d
    if (d / "distilled" / "meta.json").is_file():
        return d, d / "distilled"
    raise RetaError(f"topology diagnostics: {d} is neither a run dir (with distilled/) nor a distilled-set dir")


def load_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's saved Hydra config (``.hydra/config.yaml``) with dotted ``key=value`` overrides applied."""
    run, _ = locate(run_dir)
    path = run / ".hydra" / "config.yaml"
    if not path.is_file():
        raise RetaError(f"topology diagnostics: no saved config at {path}; pass cfg= from Python")
    cfg = OmegaConf.load(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def topology_config(cfg: DictConfig) -> TopologyConfig:
    pta = plain(cfg.method).get("callbacks", {}).get("pta", {}) if "method" in cfg else {}
    return TopologyConfig(**{k: pta[k] for k in TOPO_KEYS if k in pta})


def reference_teacher(cfg: DictConfig, train, test) -> tuple[torch.nn.Module, dict]:
    method = plain(cfg.method) if "method" in cfg else {}
    model_cfg = None
    if method.get("teachers"):
        model_cfg = teacher_specs(cfg, method["teachers"])[0][1]
    model, meta = TeacherLoader(cfg, train, test)(model_cfg)
    return model.eval().requires_grad_(False), meta


@torch.no_grad()
def embed(model, pixels: torch.Tensor, mean, std, batch: int = 256) -> torch.Tensor:
    out = [F.normalize(features(model, normalize(pixels[s : s + batch], mean, std)).float().flatten(1), dim=1)
           for s in range(0, len(pixels), batch)]
    return torch.cat(out)


def class_clouds(run_dir: str | Path, cfg: DictConfig | None = None, classes: Sequence[int] | None = None,
                 max_classes: int = 20) -> dict:
    """Everything the plots need for the run in ``run_dir``: ``{"run", "distilled", "config", "teacher", "ipc",
    "clouds": [(class, name, real [P, d], syn [n, d]), ...]}``; IPC 1 → ``clouds`` empty and ``skipped`` set."""
    run, dist_dir = locate(run_dir)
    cfg = load_run_config(run) if cfg is None else cfg
    distilled = load_distilled(dist_dir)
    ipc, num_classes = int(distilled.meta["ipc"]), int(distilled.meta["num_classes"])
    result = {"run": run, "distilled": distilled, "config": topology_config(cfg), "ipc": ipc, "clouds": [],
              "teacher": None, "skipped": None}
    if ipc < 2:
        result["skipped"] = "IPC 1: a one-point cloud has no edges, no topology to compare"
        return result
    ds = plain(cfg.dataset)
    train = load_split(cfg.dataset, "train", cfg.paths.data_dir)
    test = load_split(cfg.dataset, "test", cfg.paths.data_dir)
    teacher, tmeta = reference_teacher(cfg, train, test)
    method = plain(cfg.method) if "method" in cfg else {}
    init = method.get("init", {}) if isinstance(method.get("init"), dict) else {}
    extra = {"crop_scale": tuple(init["crop_scale"])} if "crop_scale" in init else {}  # same cache entry as the run
    pool = cached_patch_pool(cfg.paths.cache_dir, ds["name"], teacher_id(tmeta), dataset=train, teacher=teacher,
                             mean=ds["mean"], std=ds["std"], num_classes=num_classes, size=ds["image_size"],
                             mipc=int(init.get("mipc", 300)), num_crop=int(init.get("num_crop", 5)), seed=int(cfg.seed),
                             **extra)
    chosen = list(range(num_classes))[:max_classes] if classes is None else [int(c) for c in classes]
    names = distilled.meta.get("class_names") or ds.get("class_names") or [str(c) for c in range(num_classes)]
    for c in chosen:
        real = embed(teacher, pool.render(train, c), ds["mean"], ds["std"])
        syn = embed(teacher, distilled.images[distilled.labels == c], ds["mean"], ds["std"])
        result["clouds"].append((c, names[c], real, syn))
    result["teacher"] = tmeta.get("name")
    return result
