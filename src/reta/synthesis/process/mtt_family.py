"""The ``trajectory`` method kind: MTT (docs/methods.md, "MTT").

The expert buffer (``method.experts``: N experts × E epochs of the method's ``net``) is a cached, keyed product
(:mod:`reta.training.experts`): built once — by ``reta-experts`` or on first use here (recorded as teacher time) — and
found by its key afterwards. The distillation loop is :mod:`reta.synthesis.process.trajectory`; the Lightning loop,
resume and precision are shared with the DM and DC families (:mod:`reta.synthesis.matcher_run`).
"""

from __future__ import annotations

from dataclasses import asdict

from reta.synthesis.matcher_module import MatcherModule
from reta.synthesis.matcher_run import fit_matcher, matcher_device, matcher_result
from reta.synthesis.matcher_state import fingerprint
from reta.synthesis.process.config import TrajectorySpec
from reta.synthesis.process.trajectory import TrajectoryMatcher
from reta.synthesis.registry import DistillContext, SynthesisResult
from reta.synthesis.snapshots import check_snapshots
from reta.training.common import seed_everything
from reta.training.experts import expert_buffer
from reta.utils.config import plain


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    ipc = int(cfg.ipc)
    spec = TrajectorySpec.from_cfg(cfg.method, ipc)
    device = matcher_device(cfg)
    with ctx.teacher_timing():  # experts trained on first use are teacher time, not synthesis
        experts = expert_buffer(cfg, ctx.train, ctx.test, ctx.out_dir)
    seed_everything(int(cfg.seed))
    matcher = TrajectoryMatcher(spec, plain(cfg.dataset), ipc, ctx.train, int(cfg.seed), device, experts)
    matcher.fingerprint = fingerprint(cfg, spec) + experts.entry.name
    module = MatcherModule(matcher)

    def fields() -> dict:  # syn_lr as it stands: a snapshot's students train at the lr learnt so far
        return {
            "syn_lr": float(matcher.syn_lr.detach()),
            "experts": {"key": experts.entry.name, "recipe": experts.meta["recipe"],
                        "test_acc": experts.meta["test_acc"], "build_seconds": experts.meta["build_seconds"]},
            "resolved_method": asdict(spec),
        }

    fit = fit_matcher(cfg, ctx, matcher, module, device, spec.iterations, spec.checkpoint_every, spec.name, fields)
    return matcher_result(matcher, fit, device, fields())


def check_config(cfg) -> None:
    """Validate ``cfg.method`` (keys, types, ranges, per-IPC block, expert recipe) and ``snapshots`` before any
    work."""
    check_snapshots(cfg, synthesize, TrajectorySpec.from_cfg(cfg.method, int(cfg.ipc)).iterations)


synthesize.check_config = check_config
synthesize.snapshots = True  # writes budget snapshots (reta.synthesis.snapshots)
