"""The ``gradient`` method kind: DC and DSA (docs/methods.md, "DC and DSA").

``method=dc`` matches per-class gradients of a freshly initialised ConvNet on real and synthetic images with the
layer-wise distance of the DC code; ``method=dsa`` adds one differentiable augmentation per class shared by the real
and the synthetic batch (Siamese) and per-image augmentation in the inner loop (:mod:`reta.synthesis.process.gradient`
has the loop and its sources). The outer/inner loops, the learning rates and the initialisation follow the DC code
per IPC (``per_ipc`` blocks of ``conf/method/dc.yaml`` / ``dsa.yaml``). Sets are meant for ``protocol=dc``.

Resume: ``<output_dir>/checkpoints/last.ckpt`` every ``checkpoint_every`` iterations; ``resume=true`` continues from it
and gives the same images as an uninterrupted run (:mod:`reta.synthesis.matcher_run`).
"""

from __future__ import annotations

from dataclasses import asdict

from reta.synthesis.matcher_module import MatcherModule
from reta.synthesis.matcher_run import fit_matcher, matcher_device, matcher_result
from reta.synthesis.matcher_state import fingerprint
from reta.synthesis.process.config import GradientSpec
from reta.synthesis.process.gradient import GradientMatcher
from reta.synthesis.registry import DistillContext, SynthesisResult
from reta.synthesis.snapshots import check_snapshots
from reta.training.common import seed_everything
from reta.utils.config import plain


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    ipc = int(cfg.ipc)
    spec = GradientSpec.from_cfg(cfg.method, ipc)
    device = matcher_device(cfg)
    seed_everything(int(cfg.seed))  # network initialisations come from torch's global stream
    matcher = GradientMatcher(spec, plain(cfg.dataset), ipc, ctx.train, int(cfg.seed), device)
    matcher.fingerprint = fingerprint(cfg, spec)
    module = MatcherModule(matcher)

    def fields() -> dict:
        return {"loops": {"outer": spec.outer_loop, "inner": spec.inner_loop}, "siamese_dsa": spec.siamese,
                "resolved_method": asdict(spec)}

    fit = fit_matcher(cfg, ctx, matcher, module, device, spec.iterations, spec.checkpoint_every, spec.name, fields)
    return matcher_result(matcher, fit, device, fields())


def check_config(cfg) -> None:
    """Validate ``cfg.method`` (keys, types, ranges, per-IPC block) and ``snapshots`` before any work."""
    check_snapshots(cfg, synthesize, GradientSpec.from_cfg(cfg.method, int(cfg.ipc)).iterations)


synthesize.check_config = check_config
synthesize.snapshots = True  # writes budget snapshots (reta.synthesis.snapshots)
