"""Frozen feature extractors for the frozen-backbone family (LGM, SFM, the linear probe), cached like teachers.

A backbone is ``φ: [0, 1] pixels → R^d`` built through timm (``forward_features`` + ``forward_head(pre_logits=True)``,
:func:`reta.models.features`). :class:`FrozenBackbone` owns the input normalisation, so images enter in [0, 1] and are
normalised exactly once (the trap of GeorgeCazenavette/linear-gradient-matching issue #3: normalising before the
evaluation normalises twice). Sources (``backbone.source``):

``simclr``   a ConvNet trained by reta without labels (SimCLR, :mod:`reta.training.ssl`) on the training split;
``random``   the same architecture at its seeded random initialisation, frozen;
``teacher``  the supervised teacher of the run's ``model``/``recipe`` (the teacher cache,
             :mod:`reta.training.teacher_cache`);
``timm``     a timm model by name with its pretrained weights (``pretrained: true``, timm's hub) or a local weights file
             (``checkpoint``), e.g. DINOv2 / CLIP / EVA-02 as in arXiv 2511.16674; inputs are resized to ``input_size``
             and normalised with the backbone's own ``mean``/``std``.

Every backbone has a cache entry ``<cache_dir>/backbones/<dataset>_<name>_<key>/`` (``key`` hashes the dataset and the
weight-determining backbone config): ``model.pt`` (SimCLR weights, weights-only state dict), ``meta.json``, and what is
computed once per backbone beside it — the golden probe (:mod:`reta.training.probe`) and the SFM real statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reta.data.augment import normalize
from reta.data.registry import dataset_identity
from reta.errors import RetaError
from reta.models import build_model, features
from reta.training.teacher import load_state_dict_file, load_weights, timestamp, write_cache_entry
from reta.utils.cache_files import damaged, read_json
from reta.utils.config import config_digest, plain
from reta.utils.schema import parse

SOURCES = ("simclr", "random", "teacher", "timm")


@dataclass(frozen=True)
class BackboneSpec:
    """The ``backbone`` config group."""

    name: str = "simclr"
    source: str = "simclr"
    model: dict = field(
        default_factory=lambda: {"name": "convnet", "kwargs": {"depth": 3, "width": 64, "norm": "instance"}}
    )
    seed: int = 0
    ssl: dict = field(default_factory=dict)  # SSLSpec fields (source simclr)
    probe: dict = field(default_factory=dict)  # GoldenSpec fields (the full-data probe / golden head)
    pretrained: bool = False  # source timm: timm hub weights
    checkpoint: str | None = None  # source timm: a local weights file instead
    input_size: int | None = None  # resize inputs to this side before φ (null: native resolution)
    mean: list | None = None  # the backbone's own normalisation (null: the dataset's)
    std: list | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise RetaError(f"backbone.source {self.source!r} unknown; valid: {', '.join(SOURCES)}")

    @classmethod
    def from_cfg(cls, cfg: Any) -> BackboneSpec:
        return parse(cls, cfg, "backbone")


class FrozenBackbone(nn.Module):
    """``φ(x)`` for pixel-space ``x`` in [0, 1]: resize (optional) → normalise once → timm features. Frozen, eval mode;
    gradients still flow to the input (LGM/SFM optimise the images through it)."""

    def __init__(self, net: nn.Module, mean, std, input_size: int | None, key: str, meta: dict) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.mean, self.std = list(mean), list(std)
        self.input_size = input_size
        self.key, self.meta = key, meta
        self.dim: int | None = None
        self.entry: Path | None = None
        self.gray_to_rgb = False  # a 3-channel backbone on 1-channel data: repeat the channel (before normalising)

    def train(self, mode: bool = True) -> FrozenBackbone:  # always eval: BN/dropout of a frozen backbone stay fixed
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.gray_to_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return features(self.net, normalize(x, self.mean, self.std))

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 500, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Features of a whole (uint8 or [0, 1]) tensor, batched, no graph."""
        dev = next(self.net.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            out.append(self(x.to(dev)).to(dtype).cpu())
        return torch.cat(out)


def backbone_key(spec: BackboneSpec, dataset_cfg: Mapping, teacher_key: str | None = None) -> str:
    """12-hex digest of what determines φ's weights: dataset, source, model, seed, SSL recipe / weights origin."""
    ds = dataset_identity(dataset_cfg)
    d = asdict(spec)
    d.pop("probe")
    d.pop("name")
    payload = {"dataset": ds, "backbone": d, "teacher": teacher_key}
    return config_digest(payload)


def expected_key(cfg: Any, spec: BackboneSpec | None = None) -> str | None:
    """The key :func:`get_backbone` will give, without building anything (None for ``source: teacher``, whose key
    depends on the cached teacher)."""
    spec = spec or BackboneSpec.from_cfg(cfg.backbone)
    return None if spec.source == "teacher" else backbone_key(spec, plain(cfg.dataset))


def entry_dir(cache_dir: str | Path, dataset_name: str, spec: BackboneSpec, key: str) -> Path:
    return Path(cache_dir) / "backbones" / f"{dataset_name}_{spec.name}_{key}"


def _build(spec: BackboneSpec, ds: Mapping) -> nn.Module:
    return build_model(spec.model, ds["num_classes"], ds["channels"], spec.input_size or ds["image_size"])


def get_backbone(cfg: Any, train=None, test=None, spec: BackboneSpec | None = None) -> FrozenBackbone:
    """The frozen backbone of ``cfg.backbone`` (or ``spec``) for ``cfg.dataset``: from the cache, or built now (SimCLR
    trained and cached on first use). ``cfg`` needs ``dataset``, ``paths`` and, for ``source: teacher``, the squeeze
    keys (``model``, ``recipe``, ``seed``, ``teacher``)."""
    spec = spec or BackboneSpec.from_cfg(cfg.backbone)
    ds = plain(cfg.dataset)
    mean, std = spec.mean or ds["mean"], spec.std or ds["std"]
    if spec.source == "teacher":
        from reta.training.teacher_cache import get_teacher

        net, tmeta = get_teacher(cfg, train, test)
        key = backbone_key(spec, ds, tmeta.get("key") or tmeta.get("checkpoint_sha256"))
        meta = {"teacher": {k: tmeta.get(k) for k in ("name", "key", "test_acc", "checkpoint_sha256")}}
        return _finish(cfg, spec, ds, net, mean, std, key, meta)
    key = backbone_key(spec, ds)
    entry = entry_dir(cfg.paths.cache_dir, ds["name"], spec, key)
    if spec.source == "random":
        torch.manual_seed(int(spec.seed))
        return _finish(cfg, spec, ds, _build(spec, ds), mean, std, key, {})
    if spec.source == "timm":
        import timm

        if spec.checkpoint:
            net = timm.create_model(spec.model["name"], pretrained=False, num_classes=0,
                                    **(spec.model.get("kwargs") or {}))
            load_weights(net, load_state_dict_file(spec.checkpoint), spec.checkpoint)
        else:
            if not spec.pretrained:
                raise RetaError("backbone.source=timm needs pretrained=true (timm hub) or checkpoint=FILE")
            try:
                net = timm.create_model(spec.model["name"], pretrained=True, num_classes=0,
                                        **(spec.model.get("kwargs") or {}))
            except OSError as err:  # no network and no hub cache (huggingface_hub's LocalEntryNotFoundError …)
                raise RetaError(f"backbone {spec.name}: cannot fetch the pretrained weights of {spec.model['name']} "
                                f"({type(err).__name__}); offline, save them once and pass "
                                "backbone.pretrained=false backbone.checkpoint=FILE") from err
        return _finish(cfg, spec, ds, net, mean, std, key, {})
    # simclr: cached weights, or train now
    net = _build(spec, ds)
    if (entry / "model.pt").is_file():
        meta = read_json(entry / "meta.json")
        try:
            load_weights(net, load_state_dict_file(entry / "model.pt"), str(entry / "model.pt"))
        except RetaError as err:
            raise damaged(entry / "model.pt", f"does not load ({err})") from err
        logging.getLogger(__name__).info("backbone from cache: %s", entry.name)
        return _finish(cfg, spec, ds, net, mean, std, key, meta.get("ssl_result", {}))
    from reta.data.registry import load_split
    from reta.training.ssl import SSLSpec, train_simclr

    train = train if train is not None else load_split(cfg.dataset, "train", cfg.paths.data_dir)
    ssl = parse(SSLSpec, spec.ssl, "backbone.ssl")
    torch.manual_seed(int(spec.seed))
    net = _build(spec, ds)
    result = train_simclr(net, train, mean, std, ssl, int(spec.seed), cfg)
    meta = {"name": spec.name, "key": key, "dataset": ds["name"], "backbone": asdict(spec), "created": timestamp(),
            "ssl_result": result, "source": "reta simclr"}
    write_cache_entry(entry, net, meta)
    return _finish(cfg, spec, ds, net, mean, std, key, result)


def _finish(cfg, spec: BackboneSpec, ds: Mapping, net: nn.Module, mean, std, key: str, extra: dict) -> FrozenBackbone:
    meta = {"name": spec.name, "key": key, "source": spec.source, "config": asdict(spec),
            **({"info": extra} if extra else {})}
    bb = FrozenBackbone(net, mean, std, spec.input_size, key, meta)
    bb.entry = entry_dir(cfg.paths.cache_dir, ds["name"], spec, key)
    bb.gray_to_rgb = spec.source == "timm" and int(ds["channels"]) == 1
    with torch.no_grad():
        c, s = int(ds["channels"]), int(ds["image_size"])
        bb.dim = int(bb(torch.zeros(1, c, s, s)).shape[1])
    return bb
