"""Sharded BN-matching distillation (reta.synthesis.distributed): 2 gloo ranks merge to the single-process set."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

from reta import distill
from reta.data.distilled import load_distilled
from reta.errors import RetaError
from reta.synthesis.bn.residual import ResidualConnection
from reta.synthesis.bn.step import make_jobs
from reta.synthesis.distributed import (
    ShardInfo,
    check_shardable,
    first_host,
    init_distributed,
    master_from_env,
    ranks_from_env,
    shard_jobs,
)
from reta.synthesis.pixels import SyntheticImages

from fixtures import write_idx_dataset
from helpers import compose_cfg, tiny_overrides

# 10 classes in chunks of 5, ipc 2 → 4 jobs: rank 0 runs jobs 0 and 2 (job 2 right after job 0, not after job 1)
TINY = ["method=fadrm", "ipc=2", "method.classes_per_batch=5", "method.stages.sizes=[28,28]",
        "method.stages.budgets=[2,2]", "method.init.mipc=6", "method.init.num_crop=2", "method.checkpoint_every=100",
        "method.log_every=0"]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("num_classes,ipc,per", [(10, 1, None), (10, 3, 4), (7, 5, 2), (3, 2, None)])
def test_shards_cover_every_job_exactly_once(world, num_classes, ipc, per):
    jobs = make_jobs(num_classes, ipc, per)
    shards = [shard_jobs(jobs, r, world) for r in range(world)]
    seen = sorted(j.index for s in shards for j in s)
    assert seen == list(range(len(jobs)))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    for r, s in enumerate(shards):
        assert all(ShardInfo(r, world).owns(j.index) for j in s)
    with pytest.raises(RetaError):
        shard_jobs(jobs, world, world)


def test_environment_parsing():
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0"}) == (3, 4, 1)
    assert ranks_from_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}) == (5, 8, 1)
    assert ranks_from_env({}) == (0, 1, 0)
    assert first_host("node[03-05,9],gpu1") == "node03"
    assert first_host("a1,a2") == "a1" and first_host("nid[0012-0013]-ib") == "nid0012-ib"
    assert master_from_env({"SLURM_JOB_NODELIST": "gpu[17-18]", "SLURM_JOB_ID": "4242123"}) == ("gpu17", 17123)
    assert master_from_env({"MASTER_ADDR": "h", "MASTER_PORT": "1234"}) == ("h", 1234)
    assert master_from_env({}, "x", 7) == ("x", 7) and master_from_env({}) == ("127.0.0.1", 29500)


def test_cross_slot_callbacks_are_refused_when_sharded():
    from reta.synthesis.reta.drc import RetrievalAnchors
    from reta.synthesis.reta.pta import TopologyAlignment

    module = SimpleNamespace(ipc=2)
    two = ShardInfo(0, 2)
    with pytest.raises(RetaError, match="PTA"):
        check_shardable(module, [TopologyAlignment()], two)
    with pytest.raises(RetaError, match="reuse=never"):
        check_shardable(module, [ResidualConnection(0.5, RetrievalAnchors(reuse="never"))], two)
    check_shardable(module, [TopologyAlignment(enabled=False), ResidualConnection(0.5, RetrievalAnchors())], two)
    check_shardable(module, [TopologyAlignment()], ShardInfo())  # one process: anything goes


def test_only_bn_matching_methods_shard(tmp_path):
    cfg = compose_cfg("distill", [*tiny_overrides(tmp_path, tmp_path / "nodata"), "method=dm", "ipc=1"])
    with pytest.raises(RetaError, match="shards only BN-matching methods"):
        distill._run(cfg, ShardInfo(0, 2))  # refused before any data is read or collective is called
    assert init_distributed(cfg).world == 1  # distributed.enabled defaults to false


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, ports: tuple[int, int], overrides: list[str], report: str) -> None:
    torch.set_num_threads(1)
    _collectives(rank, world, ports[0], report)  # one spawn for both checks: starting a rank costs ~10 s here
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(ports[1]))
    result = distill.run(compose_cfg("distill", [*overrides, "distributed.enabled=true", "distributed.backend=gloo",
                                                 "distributed.timeout_min=2"]))
    Path(report, f"rank{rank}.json").write_text(json.dumps({"distilled": result["distilled"],
                                                              "shards": result["shards"]}))


def _collectives(rank: int, world: int, port: int, report: str) -> None:
    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    shard = init_distributed({"distributed": {"enabled": True, "backend": "auto", "timeout_min": 1}}, env)
    out: dict = {"backend": shard.backend, "broadcast": shard.broadcast(f"from {rank}")}
    try:
        with shard.main_first("building"):
            if rank == 1:
                raise ValueError("rank 1 broke")
    except Exception as err:  # noqa: BLE001
        out["main_first"] = f"{type(err).__name__}: {err}"
    # a fake module: 5 jobs (3 on rank 0, 2 on rank 1), each rank fills its own jobs with its rank + 1
    jobs = make_jobs(3, 5, None)
    store = SyntheticImages(torch.zeros(15, 1, 2, 2), 3, 5, [0.0], [1.0])
    module = SimpleNamespace(jobs=jobs, own_jobs=shard.jobs(jobs), images=store, job_seconds=[])
    for job in module.own_jobs:
        store.data.data[store.index(job.classes, job.slot)] = float(rank + 1) + job.index / 10
        module.job_seconds.append(float(job.index))
    shard.gather_images(module)
    out["store"] = store.data.detach()[:, 0, 0, 0].tolist()
    out["seconds"] = module.job_seconds
    shard.destroy()
    Path(report, f"coll{rank}.json").write_text(json.dumps(out))


@pytest.mark.slow  # two spawned gloo ranks, ~40 s
def test_two_gloo_ranks_give_the_single_process_set(tmp_path):
    """2 spawned gloo ranks (fadrm, patch init, one residual merge, 4 jobs) write exactly the images and labels
    of the single-process run of the same seed; also the collectives (failure propagation, uneven gather)."""
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    ov = [o for o in tiny_overrides(tmp_path, root) if not o.startswith("paths.output_dir=")]
    ref = distill.run(compose_cfg("distill", [*ov, *TINY, f"paths.output_dir={tmp_path / 'ref'}"]))  # fills caches
    sharded = [*ov, *TINY, f"paths.output_dir={tmp_path / 'sharded'}"]
    mp.start_processes(_rank_main, args=(2, (_free_port(), _free_port()), sharded, str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    # the collectives on their own: failures reach every rank, rank 0 merges every job (uneven shards)
    r0, r1 = (json.loads((tmp_path / f"coll{r}.json").read_text()) for r in (0, 1))
    assert r0["backend"] == r1["backend"] == "gloo" and r0["broadcast"] == r1["broadcast"] == "from 0"
    assert r1["main_first"] == "ValueError: rank 1 broke"  # its own error
    assert r0["main_first"] == "RetaError: rank 1 of 2 failed while building (ValueError: rank 1 broke)"
    # storage order: class c slot k at c * ipc + k; job = slot k (all classes); owner = k % 2
    expected = [float(k % 2 + 1) + k / 10 for c in range(3) for k in range(5)]
    assert r0["store"] == pytest.approx(expected) and r0["seconds"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [v for v in r1["store"] if v] == pytest.approx([v for v in expected if v >= 2])  # rank 1 keeps its own
    assert r1["seconds"] == [1.0, 3.0]
    # the sharded distillation
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[1] == {"distilled": None, "shards": 2}  # only rank 0 writes
    out = tmp_path / "sharded" / "distilled"
    assert Path(reports[0]["distilled"]) == out
    for name in ("images.pt", "labels.pt"):
        a = torch.load(Path(ref["distilled"]) / name, weights_only=True)
        b = torch.load(out / name, weights_only=True)
        assert torch.equal(a, b), name
    a, b = load_distilled(ref["distilled"]), load_distilled(out)
    assert a.meta["shards"] == 1 and b.meta["shards"] == 2
    assert b.meta["synthesis"]["jobs"] == 4 and len(b.meta["synthesis"]["seconds_per_job"]) == 4
    assert b.meta["synthesis"]["residual"] == {"alpha": 0.5, "anchors": {"kind": "static"}}
    ckpts = tmp_path / "sharded" / "checkpoints"
    # each rank resumes its own jobs; run.json = the resume key
    assert sorted(p.name for p in ckpts.iterdir()) == ["run.json", "shard0of2", "shard1of2"]
