"""The ``distribution`` method kind: DM, IDM and their IID variants (docs/methods.md §6).

One loop, two variants (``method.variant``):

``dm`` [code: VICO-UoE/DatasetCondensation ``main_DM.py``]
    every iteration a *freshly initialised* embedder ψ (ConvNet, instance norm; frozen); per class c a batch of
    ``batch_real`` real images of c and the IPC synthetic images of c go through ONE shared DSA draw (Siamese,
    :meth:`reta.data.dsa.DSA.siamese`), then ``L_c = ‖mean ψ(real) − mean ψ(syn)‖²``; the class losses are summed and
    the images take one SGD step (lr 1, momentum 0.5). Gradients are accumulated class by class (same gradient as
    one backward of the sum, a class-sized graph at a time).
``idm`` [code: uitrbn/IDM ``IDM_cifar10.py`` with the published ``command.txt`` flags]
    the embedder is drawn from a *queue of partially trained ConvNets* (starts with ``queue.initial`` random nets,
    one new net every ``queue.push_every`` iterations, at most ``queue.capacity``, oldest dropped); per class the
    loss adds ``ce_weight · acc · CE(ψ(syn), c)`` (acc: the net's running training accuracy in percent) and the
    images take one SGD step *per class*; afterwards ``queue.train_nets`` random queue nets take
    ``queue.train_steps`` SGD steps on real batches (no augmentation).
``expansion: quadrants`` (IDM's partition-and-expansion, :mod:`reta.data.expansion`)
    each stored image is a 2 × 2 mosaic of half-resolution images, initialised from 4 real images; matching uses the
    4·IPC expanded images. The set is *stored as mosaics* with ``"expansion": "quadrants"`` in ``meta.json``;
    ``reta-evaluate`` expands on load, and the random baseline it reports has the same stored IPC.

IID (``method.iid``, [code: VincenDen/IID]) adds ``λ_CM · L_CM`` (channel covariance of the embedder's last feature
map, same real/synthetic batch) and ``κ · L_CC`` (spread of the synthetic images' features around their class mean,
from a frozen pretrained network drawn from a pool, :mod:`reta.synthesis.dm.pretrained_pool`, one per iteration).
With one synthetic training image per class both are inert: warned once, skipped, recorded in ``meta.json``.

Every method field may be overridden per IPC with ``per_ipc: {IPC: {field: value, …}}``: the block of the run's IPC
is merged onto the method config (the published settings differ per IPC) — the rule every family shares.

Resume: ``<output_dir>/checkpoints/last.ckpt`` (pixels, optimiser, iteration, RNG states, the IDM queue) is written
every ``checkpoint_every`` iterations (0 = never) by a Lightning callback; ``resume=true`` with the same
``paths.output_dir`` continues from it and produces the same images as an uninterrupted run.

Pieces (the resume-and-fit runner :mod:`reta.synthesis.matcher_run` is shared with the process-matching family):
the validated config :mod:`reta.synthesis.dm.config`, one iteration :mod:`reta.synthesis.dm.matcher`, the
Lightning loop (precision, devices, loggers, progress bar, checkpoints) :mod:`reta.synthesis.matcher_module`, IDM's
model queue :mod:`reta.synthesis.dm.model_queue`, the IID pool :mod:`reta.synthesis.dm.pretrained_pool`.
"""

from __future__ import annotations

import logging
import warnings

from reta.data.expansion import factor
from reta.synthesis.dm.config import DistributionSpec
from reta.synthesis.dm.losses import INERT_MESSAGE, iid_inert
from reta.synthesis.dm.matcher import DistributionMatcher
from reta.synthesis.dm.pretrained_pool import get_pool
from reta.synthesis.matcher_module import MatcherModule
from reta.synthesis.matcher_run import fit_matcher, matcher_device, matcher_result
from reta.synthesis.matcher_state import fingerprint
from reta.synthesis.registry import DistillContext, SynthesisResult
from reta.synthesis.snapshots import check_snapshots
from reta.training.common import seed_everything
from reta.utils.config import plain

log = logging.getLogger(__name__)


def synthesize(cfg, ctx: DistillContext) -> SynthesisResult:
    ipc = int(cfg.ipc)
    spec = DistributionSpec.from_cfg(cfg.method, ipc)
    ds = plain(cfg.dataset)
    seed = int(cfg.seed)
    device = matcher_device(cfg)
    inert = iid_inert(ipc * factor(spec.expansion))
    wants_iid = spec.iid.lambda_cm > 0 or spec.iid.kappa > 0
    if wants_iid and inert:
        warnings.warn(INERT_MESSAGE, RuntimeWarning, stacklevel=2)
        log.warning(INERT_MESSAGE)
    pool, pool_meta = [], []
    if spec.iid.kappa > 0 and not inert:
        with ctx.teacher_timing():  # a pool squeezed on first use is teacher time, not synthesis
            # pool members are teachers: trained on the whole training split even under a held-out split
            pool, pool_meta = get_pool(cfg, spec.iid.pool, getattr(ctx.train, "base", ctx.train), ctx.test)
    seed_everything(seed)  # after the pool (its training reseeds): embedder inits come from this stream
    matcher = DistributionMatcher(spec, ds, ipc, ctx.train, seed, device, pool)
    matcher.fingerprint = fingerprint(cfg, spec)
    module = MatcherModule(matcher)

    def fields() -> dict:
        return {
            "expansion": spec.expansion,
            "variant": spec.variant,
            "feature_dtype": str(module.step_dtype).replace("torch.", "") if module.step_dtype is not None else None,
            "iid": {
                "lambda_cm": spec.iid.lambda_cm,
                "kappa": spec.iid.kappa,
                "inert": bool(wants_iid and inert),
                "cm_active": matcher.use_cm,
                "cc_active": matcher.use_cc,
                "pool": pool_meta,
            },
        }

    fit = fit_matcher(cfg, ctx, matcher, module, device, spec.iterations, spec.checkpoint_every, spec.name, fields)
    return matcher_result(matcher, fit, device, fields())


def check_config(cfg) -> None:
    """Validate ``cfg.method`` (keys, types, ranges, per-IPC block) and ``snapshots`` before any work."""
    check_snapshots(cfg, synthesize, DistributionSpec.from_cfg(cfg.method, int(cfg.ipc)).iterations)


synthesize.check_config = check_config
synthesize.snapshots = True  # writes budget snapshots (reta.synthesis.snapshots)
