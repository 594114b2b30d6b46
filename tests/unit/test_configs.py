"""Every config group option composes with every primary config it belongs to."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import CONF_DIR, compose_cfg

GROUPS = ["dataset", "model", "recipe", "protocol", "trainer", "logger", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


BASE = ["paths.output_dir=/tmp/x", "paths.cache_dir=/tmp/c"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group):
    names = options(group)
    assert names, f"group {group} has no options"
    for opt in names:
        primary = "evaluate" if group == "protocol" else "squeeze"
        extra = ["model.name=resnet18"] if (group == "model" and opt == "timm") else []
        cfg = compose_cfg(primary, [*BASE, f"{group}={opt}", *extra])
        node = OmegaConf.to_container(cfg, resolve=True)
        if group in ("dataset", "model", "recipe", "protocol", "trainer", "logger"):
            assert node[group], f"{group}={opt} composed to an empty node"


def test_recipe_follows_dataset():
    cfg = compose_cfg("squeeze", [*BASE, "dataset=tiny_imagenet"])
    assert cfg.recipe.epochs == 50 and cfg.recipe.crop_pad == 4


def test_protocol_selects_its_student():
    kd = compose_cfg("evaluate", [*BASE, "protocol=kd"])
    hard = compose_cfg("evaluate", [*BASE, "protocol=hard"])
    assert kd.student.kwargs.norm == "batch"
    assert hard.student.kwargs.norm == "instance"
    custom = compose_cfg("evaluate", [*BASE, "protocol=hard", "model@student=resnet18_cifar"])
    assert custom.student.name == "resnet18_cifar"


def test_dc_protocol_is_the_published_evaluation():
    """protocol=dc: the DC/DSA/DM evaluation (ConvNet-3 w128 padded to 32 px, SGD 0.01 m 0.9 wd 5e-4, batch 256,
    Epoch 1000 run as 1001 epochs with DSA and the DC decay, one test at the end); dc_noaug: 301 without DSA; hard
    unchanged."""
    dc = compose_cfg("evaluate", [*BASE, "protocol=dc"])
    p = dc.protocol
    assert (p.name, p.optimizer, p.lr, p.momentum, p.weight_decay, p.batch_size) == ("dc", "sgd", 0.01, 0.9, 5e-4, 256)
    assert (p.epochs, p.dsa, p.schedule, p.eval_every) == (1001, True, "step_dc", 1001)
    assert dc.student.kwargs.width == 128 and dc.student.kwargs.first_padding == "dc"
    assert dc.student.kwargs.norm == "instance" and dc.student.kwargs.pool == "avg"
    noaug = compose_cfg("evaluate", [*BASE, "protocol=dc_noaug"]).protocol
    assert (noaug.name, noaug.epochs, noaug.dsa, noaug.eval_every) == ("dc_noaug", 301, False, 301)
    hard = compose_cfg("evaluate", [*BASE, "protocol=hard"])
    assert hard.protocol.epochs == 300 and hard.student.kwargs.width == 64


def test_every_protocol_is_named_after_its_file():
    """metrics.json and reta-report key cells by protocol.name: a protocol that inherits another's name would merge
    its runs into the other's cells."""
    for name in options("protocol"):
        assert compose_cfg("evaluate", [*BASE, f"protocol={name}"]).protocol.name == name, name


def test_datasets_are_consistent():
    for name in options("dataset"):
        d = compose_cfg("squeeze", [*BASE, f"dataset={name}"]).dataset
        assert len(d.mean) == len(d.std) == d.channels
        if d.class_names is not None:
            assert len(d.class_names) == d.num_classes, name


def test_output_dir_override_moves_the_run_dir():
    cfg = compose_cfg("squeeze", ["paths.output_dir=/tmp/somewhere"])
    hydra_cfg = OmegaConf.load(Path(CONF_DIR) / "hydra" / "default.yaml")
    assert OmegaConf.to_container(hydra_cfg, resolve=False)["run"]["dir"] == "${paths.output_dir}"
    assert cfg.paths.output_dir == "/tmp/somewhere"


@pytest.mark.parametrize("experiment", ["table1_cpu", "table1_paper", "table3_cpu", "fig4_lambda_cpu", "fig4_topo_cpu"])
def test_experiment_configs_compose_with_reta_run(experiment):
    cfg = compose_cfg("pipeline", [f"+experiment={experiment}", "method=reta", "seed=2",
                                   "paths.output_dir=/tmp/x", "paths.cache_dir=/tmp/c"])
    OmegaConf.resolve(cfg)
    if experiment in ("table1_cpu", "table3_cpu"):  # one job per seed: distillation seed = student seed, one teacher
        assert list(cfg.seeds) == [2] and cfg.teacher.seed == 0
    elif experiment.startswith("fig4"):
        assert cfg.label.startswith("reta_") and cfg.baseline is False and cfg.ipc == 10
    assert cfg.method.name == "reta" and cfg.dataset.name == "fashion_mnist"  # table1_paper takes dataset=… per run


@pytest.mark.parametrize("primary", ["squeeze", "distill", "evaluate", "pipeline"])
def test_debug_fast_reaches_every_stage(primary):
    """The debug group is composed last in every primary config, so debug=fast overrides the stage's own keys
    (not inside squeeze, where it would come before evaluate's seeds/protocol)."""
    fast = OmegaConf.load(Path(CONF_DIR) / "debug" / "fast.yaml")
    cfg = compose_cfg(primary, [*BASE, "debug=fast"])
    assert cfg.progress_bar is False and cfg.recipe.epochs == fast.recipe.epochs
    if primary in ("evaluate", "pipeline"):
        assert list(cfg.seeds) == list(fast.seeds) and cfg.protocol.epochs == fast.protocol.epochs
        from reta.utils.debug import apply_debug

        assert apply_debug(cfg).protocol.eval_every == fast.debug.last.protocol.eval_every  # set last, where it exists
    assert compose_cfg(primary, BASE).progress_bar is True  # debug=none leaves the defaults


@pytest.mark.parametrize("script", ["evaluate", "pipeline", "distill"])
def test_cli_cfg_job_shows_debug_fast(script, monkeypatch, capsys, tmp_path):
    """What a user sees with ``reta-evaluate debug=fast --cfg job`` (the CLI's own composition, in-process)."""
    import sys

    import yaml
    from hydra.core.hydra_config import HydraConfig

    from reta.cli import distill, evaluate, pipeline

    mod = {"distill": distill, "evaluate": evaluate, "pipeline": pipeline}[script]
    monkeypatch.setattr(sys, "argv", [f"reta-{script}", "debug=fast", f"paths.output_dir={tmp_path}", "--cfg", "job"])
    try:
        mod.main()
    finally:
        HydraConfig.instance().cfg = None  # the in-process app must not leak its config into later tests
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["progress_bar"] is False and shown["seeds"] == [0] and shown["protocol"]["epochs"] == 2


def test_reta_on_fashion_mnist_uses_the_fadrm_anchor_at_every_ipc():
    """DRC's retrieved anchors lost to (IPC 1, 50) or did not beat (IPC 10) the slot's own patch on the
    held-out split, so the Fashion-MNIST setting switches DRC off (RETA = FADRM+ + PTA); other datasets keep it."""
    from reta.synthesis.bn.family import BNMethodConfig

    cfg = compose_cfg("distill", [*BASE, "method=reta", "dataset=fashion_mnist"])
    one, ten = BNMethodConfig.from_cfg(cfg.method, 1), BNMethodConfig.from_cfg(cfg.method, 10)
    assert one.residual.anchors["enabled"] is False and ten.residual.anchors["enabled"] is False
    assert one.lr == 0.25 and ten.lr == 0.02  # the FADRM+ per-IPC setting is kept
    assert ten.callbacks["pta"]["features"] == "step" and ten.callbacks["pta"]["every"] == 4
    cifar = compose_cfg("distill", [*BASE, "method=reta", "dataset=cifar100"])
    assert BNMethodConfig.from_cfg(cifar.method, 10).residual.anchors["enabled"] is True


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_option_builds_its_lightning_logger(logger, tmp_path, monkeypatch):
    """A logger config is a Lightning logger's constructor arguments: build it (W&B offline, no key)."""
    import importlib.util

    from reta.training.common import build_logger
    from reta.utils.config import plain

    has_tb = importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
    if logger == "tensorboard" and not has_tb:
        pytest.skip("tensorboard is not installed")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: offline
    built = build_logger(plain(compose_cfg("squeeze", [*BASE, f"logger={logger}"]).logger), str(tmp_path), "run")
    assert (built is False) == (logger == "none")


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_loggers_build(experiment, tmp_path):
    from reta.training.common import build_logger
    from reta.utils.config import plain

    cfg = compose_cfg("pipeline", [*BASE, f"+experiment={experiment}"])
    build_logger(plain(cfg.logger), str(tmp_path), "run")  # an extra key (e.g. the old `kind`) would raise here


@pytest.mark.parametrize("extra,lr,band,logged", [
    (["method.lr=0.03"], 0.03, "easy", "lr"),                   # a key the IPC-1 block sets: the command line wins
    (["method.init.band=hard"], 0.25, "hard", "init.band"),     # a nested key: only that key of the block yields
    (["method.init={band:spread,crop_scale:[1.0,1.0],num_crop:1}"], 0.25, "spread", "init.band"),  # a key above it
    (["method.r_bn=0.02"], 0.25, "easy", None),                 # a key the block does not set: the block applies
    (["method.per_ipc.1.lr=0.1"], 0.1, "easy", None),           # editing the block itself is not a shadowed key
])
def test_the_command_line_wins_over_a_per_ipc_block(caplog, extra, lr, band, logged):
    """FADRM+ on Fashion-MNIST sets lr 0.25 and the easy band at IPC 1 in a per-IPC block (top level: lr 0.02, medium):
    a key the running job's command line set (Hydra's task overrides) beats the block as it beats every config file,
    and the log says so once, with the way to change the block instead (``method.per_ipc.1.<key>``)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from reta.utils import config
    from reta.utils.config import per_ipc_override, plain

    config._WARNED.clear()  # the message is given once per process

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("distill", [*BASE, "method=fadrm_plus", "dataset=fashion_mnist", "ipc=1", *extra],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with caplog.at_level("INFO", logger="reta.utils.config"):
            merged, applied = per_ipc_override(plain(cfg.method), 1)
            per_ipc_override(plain(cfg.method), 1)  # parsed again in the same run: no second message
    finally:
        HydraConfig.instance().cfg = None
    assert applied and merged["lr"] == lr and merged["init"]["band"] == band
    assert merged["init"]["crop_scale"] == [1.0, 1.0]  # the file's top level under the block stays
    messages = [r.getMessage() for r in caplog.records if "per_ipc.1" in r.getMessage()]
    if logged is None:
        assert messages == []
    else:
        assert len(messages) == 1 and f"sets {logged};" in messages[0] and f"method.per_ipc.1.{logged}" in messages[0]
    # outside a Hydra job nothing came from a command line: the block applies as written
    assert per_ipc_override({"lr": 0.03, "per_ipc": {"1": {"lr": 0.25}}}, 1)[0]["lr"] == 0.25


@pytest.mark.parametrize("extra,lr", [(["method.per_ipc.1.lr=0.1"], 0.1), (["~method.per_ipc.1"], 0.02), ([], 0.25)])
def test_a_per_ipc_block_is_reachable_from_the_command_line(extra, lr):
    """The YAML quotes the per-IPC keys, so Hydra can set a key inside one IPC's block or drop that block alone (an
    int key is refused by struct mode); the rest of the block stays."""
    from reta.utils.config import per_ipc_override, plain

    cfg = compose_cfg("distill", [*BASE, "method=fadrm_plus", "dataset=fashion_mnist", "ipc=1", *extra])
    merged, applied = per_ipc_override(plain(cfg.method), 1)
    assert applied is (lr != 0.02) and merged["lr"] == lr
    assert merged["init"]["band"] == ("medium" if lr == 0.02 else "easy")


def test_per_ipc_blocks_of_one_ipc_under_int_and_string_keys_are_merged():
    from reta.utils.config import per_ipc_override

    values = {"lr": 0.1, "init": {"band": "medium"}, "per_ipc": {1: {"lr": 0.25}, "1": {"init": {"band": "easy"}}}}
    merged, applied = per_ipc_override(values, 1)
    assert applied and merged == {"lr": 0.25, "init": {"band": "easy"}}
    assert per_ipc_override(values, 10) == ({"lr": 0.1, "init": {"band": "medium"}}, False)


@pytest.mark.parametrize("experiment,terms", [
    ("published_dm", {}), ("published_idm", {"ce_weight": 0.5}),
    ("published_dm_iid", {"iid.lambda_cm": 0.01, "iid.kappa": 0.05, "iid.pool.size": 10}),
    ("published_idm_iid", {"ce_weight": 0.5, "iid.lambda_cm": 0.03, "iid.kappa": 0.01}),
])
def test_published_dm_family_runs_its_paper_setting_on_fashion_mnist(experiment, terms):
    """+experiment=published_<method>: the paper's CIFAR-10 setting of the method (20000 iterations, 256 real images
    per class, the width-128 embedder) on Fashion-MNIST with protocol=dc's first-convolution padding, unclamped, and
    the paper's per-IPC rows (IDM at IPC 1: 5000 real images, a queue push every 5 iterations)."""
    from reta.utils.config import per_ipc_override

    method = experiment.removeprefix("published_")
    cfg = compose_cfg("distill", [*BASE, f"+experiment={experiment}", "ipc=1"])
    m = cfg.method
    assert (m.name, m.scale, m.iterations, m.eval_protocol, m.clamp_output) == (method, "paper", 20000, "dc", False)
    assert m.embedder.kwargs.width == 128 and m.embedder.kwargs.first_padding == "dc"
    for key, value in terms.items():
        assert OmegaConf.select(m, key) == value, key
    at_ipc1, applied = per_ipc_override(OmegaConf.to_container(m, resolve=True), 1)
    if method.startswith("idm"):
        assert applied and at_ipc1["batch_real"] == 5000 and at_ipc1["queue"]["push_every"] == 5
    else:
        assert at_ipc1["batch_real"] == 256
    cpu = compose_cfg("distill", [*BASE, f"method={method}"]).method
    assert cpu.scale == "cpu" and cpu.iterations < 20000  # the CPU default on Fashion-MNIST is untouched
