"""RDED (``method=rded``): the shared crop selection, the stitched layout, reta-distill end to end, bad keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reta import distill
from reta.cli import distill as cli_distill
from reta.data.augment import normalize
from reta.data.distilled import load_distilled
from reta.synthesis.bn.init import _pad_centre, build_patch_pool, rank_crops
from reta.synthesis.bn.rded import stitch
from reta.training.soft_labels import apply_view, sample_view, shuffle_patches
from reta.training.student import Protocol

from fixtures import write_idx_dataset
from helpers import cli, compose_cfg, tiny_overrides


class ToyImages:
    """``gather``/``targets`` of a dataset: 2 classes × 8 grey images of different brightness."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.targets = torch.arange(2).repeat_interleave(8)
        self.images = torch.rand(16, 1, 16, 16, generator=g) * torch.linspace(0.1, 1.0, 16).view(16, 1, 1, 1)

    def gather(self, idx):
        return self.images[torch.as_tensor(idx)]


class Brightness(nn.Module):
    """Logits (k·mean(x), −k·mean(x)): class 0 prefers bright crops, class 1 dark ones."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)  # only so that it has parameters

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([3 * m, -3 * m], 1)


def test_rank_crops_keeps_each_images_lowest_crop_and_sorts_images():
    ce = torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 0.7], [2.0, 2.5, 9.0]])
    order, best, best_ce = rank_crops(ce)
    assert best.tolist() == [1, 0, 0] and best_ce.tolist() == [1.0, 0.5, 2.0]
    assert order.tolist() == [1, 0, 2]


@pytest.mark.parametrize("pad_to", [None, 16])
def test_pool_entries_are_distinct_images_ranked_by_their_best_crop(pad_to, monkeypatch):
    import reta.synthesis.bn.init as init_mod

    seen = []
    monkeypatch.setattr(init_mod, "rank_crops", lambda ce: seen.append(ce.clone()) or rank_crops(ce))
    data, teacher = ToyImages(), Brightness()
    size = 16 if pad_to is None else 8
    pool = build_patch_pool(data, teacher, [0.5], [0.5], 2, size, mipc=8, num_crop=4, seed=0, pad_to=pad_to)
    for c in range(2):
        src = pool.source[c]
        assert len(set(src.tolist())) == src.numel() == 8  # one crop per source image
        assert torch.all(pool.scores[c][1:] >= pool.scores[c][:-1])  # ascending CE
        crops = pool.render(data, c)
        ce = F.cross_entropy(teacher(_pad_centre(normalize(crops, [0.5], [0.5]), pad_to)),
                             torch.full((8,), c), reduction="none")
        torch.testing.assert_close(ce, pool.scores[c])  # the stored score is the kept crop's own CE
        # … and it is the lowest of that image's num_crop candidates, ranked ascending over the images
        assert seen[c].shape == (8, 4) and not torch.equal(seen[c].min(1).values, seen[c].max(1).values)
        torch.testing.assert_close(pool.scores[c], seen[c].min(1).values.sort().values)


def test_stitch_puts_rank_k_ipc_plus_i_in_cell_k_of_image_i():
    ipc, factor = 3, 2
    crops = torch.arange(ipc * factor * factor, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    out = stitch(crops.contiguous(), ipc, factor, 8)
    assert out.shape == (3, 1, 8, 8)
    for i in range(ipc):
        cells = [out[i, 0, :4, :4], out[i, 0, :4, 4:], out[i, 0, 4:, :4], out[i, 0, 4:, 4:]]  # row-major
        assert [float(cell.unique()) for cell in cells] == [k * ipc + i for k in range(4)]
    assert torch.equal(stitch(crops[:3].contiguous(), 3, 1, 4), crops[:3])  # factor 1: the crops themselves


def test_shuffle_patches_permutes_strips_and_is_drawn_only_when_on():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = shuffle_patches(x, torch.tensor([[[1, 0], [1, 0]]]))
    assert out[0, 0].tolist() == [[10, 11, 8, 9], [14, 15, 12, 13], [2, 3, 0, 1], [6, 7, 4, 5]]
    from reta.evaluation import protocol_values

    cfg = protocol_values(compose_cfg("evaluate", ["protocol=kd"]).protocol)  # the settings, not the plug-in keys
    off = Protocol.from_cfg(cfg)
    on = Protocol.from_cfg({**cfg, "shuffle_patches": 2})
    v_off = sample_view(off, 4, 8, 8, torch.Generator().manual_seed(0))
    v_on = sample_view(on, 4, 8, 8, torch.Generator().manual_seed(0))
    assert v_off.shuffle is None and v_on.shuffle.shape == (4, 2, 2)
    assert torch.equal(v_off.boxes, v_on.boxes) and torch.equal(v_off.perm, v_on.perm)  # same draws otherwise
    imgs = torch.rand(4, 1, 8, 8)  # the shuffle comes first, then the crop, flip and CutMix of the same draws
    assert torch.equal(apply_view(imgs, v_on), apply_view(shuffle_patches(imgs, v_on.shuffle), v_off))


@pytest.fixture()
def tiny(tmp_path):
    root = write_idx_dataset(tmp_path / "fmnist", n_train=60, n_test=30, classes=10, gz=True)
    return tmp_path, tiny_overrides(tmp_path, root)


@pytest.mark.parametrize("factor", [1, 2])
def test_reta_distill_rded_writes_the_selected_crops(tiny, factor):
    tmp_path, ov = tiny
    r = distill.run(compose_cfg("distill", [*ov, "method=rded", "ipc=1", f"method.factor={factor}", "method.mipc=6",
                                            "method.num_crop=2"]))
    ds = load_distilled(r["distilled"])
    assert ds.images.shape == (10, 1, 28, 28) and ds.labels.tolist() == list(range(10))
    syn = ds.meta["synthesis"]
    assert syn["factor"] == factor
    for c in range(10):
        assert len(syn["train_indices"][c]) == factor ** 2 == len(set(syn["train_indices"][c]))
        assert syn["scores"][c] == sorted(syn["scores"][c])
    assert ds.meta["teacher"]["checkpoint_sha256"]  # scored by the squeeze teacher


@pytest.mark.parametrize("method, bad, says", [
    ("rded", "+method.facter=2", "facter"),
    ("edc", "method.losses.1.alpha=1.5", "alpha must be in [0, 1]"),
    ("cvdd", "+method.losses.0.temprature=3", "temprature"),
])
def test_bad_keys_of_the_baselines_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, method, bad, says):
    out = tmp_path / "out"
    code, lines, err = cli(cli_distill, [f"method={method}", bad, f"paths.output_dir={out}", "logger=none"],
                           monkeypatch, capsys, cwd=tmp_path)
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and says in lines[0], err[-2000:]
    assert not (out / "distilled").exists() and not (out / "checkpoints").exists()
