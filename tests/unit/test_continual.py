"""Class-incremental steps (reta.evaluation.continual): what each step's student trains on and is tested on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reta.data.base import TensorImageDataset
from reta.errors import RetaError
from reta.evaluation.continual import (
    ContinualSpec,
    SeenClassesTeacher,
    class_order,
    run_steps,
    step_split,
    summarize_steps,
)

C = 10


def _data(per_class, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(per_class)
    return torch.rand(len(labels), 1, 8, 8, generator=g), labels


def _spec(**kw):
    cfg = {"steps": 5, "class_order": None, "mode": "fresh", "budget": None, **kw}
    return ContinualSpec.from_cfg(cfg)


class Spy:
    """A stand-in student trainer that records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, labels, test, seed, run_name, init_state, after_fit, teacher=None):
        self.calls.append({"train": labels.tolist(), "n": len(images), "test": test.targets.tolist(),
                           "init": init_state, "teacher": teacher})
        extra = after_fit(torch.nn.Linear(1, 1)) if after_fit else {}
        return {"acc_last": len(set(labels.tolist())) / C, "acc_best": 1.0, "seconds": 0.0, **extra}


def test_class_order_is_cl_dm_s_seeded_permutation():
    assert class_order(_spec(), C, 3) == list(np.random.RandomState(3).permutation(C))
    assert class_order(_spec(), C, 3) != class_order(_spec(), C, 4)
    assert class_order(_spec(class_order=list(range(9, -1, -1))), C, 3) == list(range(9, -1, -1))


def test_step_k_student_sees_only_the_memory_of_the_first_k_steps_and_is_tested_on_exactly_those_classes():
    images, labels = _data(4)
    test = TensorImageDataset((_data(3, seed=1)[0] * 255).to(torch.uint8), _data(3, seed=1)[1], list("abcdefghij"))
    splits = step_split(class_order(_spec(), C, 0), 5, C)
    spy = Spy()
    steps = run_steps(images, labels, splits, 2, test, spy, 0, "fresh", "x")
    for k, call in enumerate(spy.calls):
        seen = {c for s in splits[:k + 1] for c in s}
        assert set(call["train"]) == seen and call["n"] == 2 * len(seen)  # budget 2 per seen class
        assert sorted(call["test"]) == sorted(t for t in test.targets.tolist() if t in seen)
        assert call["init"] is None  # fresh: every student from scratch
        assert steps[k]["classes"] == [c for s in splits[:k + 1] for c in s] and steps[k]["memory_size"] == call["n"]


def test_continue_mode_starts_each_step_from_the_previous_student():
    images, labels = _data(2)
    test = TensorImageDataset((images * 255).to(torch.uint8), labels, list("abcdefghij"))
    spy = Spy()
    run_steps(images, labels, step_split(list(range(C)), 5, C), 1, test, spy, 0, "continue", "x")
    assert spy.calls[0]["init"] is None and all(c["init"] is not None for c in spy.calls[1:])


def test_the_random_buffer_and_the_distilled_memory_have_the_same_size_at_every_step():
    from reta.data.registry import sample_per_class

    real_x, real_y = _data(30)
    dist_x, dist_y = _data(5, seed=2)
    splits = step_split(class_order(_spec(), C, 1), 5, C)
    idx = sample_per_class(real_y, C, 5, seed=1)
    test = TensorImageDataset((dist_x * 255).to(torch.uint8), dist_y, list("abcdefghij"))
    random = run_steps(real_x[idx], real_y[idx], splits, 5, test, Spy(), 1, "fresh", "r")
    distilled = run_steps(dist_x, dist_y, splits, 5, test, Spy(), 1, "fresh", "d")
    assert [s["memory_size"] for s in random] == [s["memory_size"] for s in distilled] == [10, 20, 30, 40, 50]


def test_a_split_that_does_not_match_the_classes_is_refused():
    with pytest.raises(RetaError, match="not a permutation of the set's 10 classes"):
        step_split(list(range(8)), 4, C)
    with pytest.raises(RetaError, match="steps=3 does not divide the 10 classes.*valid: 1, 2, 5, 10"):
        step_split(list(range(C)), 3, C)
    with pytest.raises(RetaError, match="needs 3 images of class"):
        run_steps(*_data(2), step_split(list(range(C)), 5, C), 3, None, Spy(), 0, "fresh", "x")
    with pytest.raises(RetaError, match="mode must be one of fresh, continue"):
        _spec(mode="replay")
    with pytest.raises(RetaError, match=r"protocol\.continual: unknown keys \['student_protocol'\]"):
        _spec(student_protocol="hard")
    with pytest.raises(RetaError, match=r"protocol\.continual\.budget: missing"):
        ContinualSpec.from_cfg({"steps": 5, "class_order": None, "mode": "fresh"})


def test_summary_per_step_is_mean_and_std_over_seeds():
    runs = [[{"classes": [0, 1], "memory_size": 4, "acc_last": a},
             {"classes": [0, 1, 2, 3], "memory_size": 8, "acc_last": b}] for a, b in ((0.9, 0.6), (0.7, 0.4))]
    rows = summarize_steps(runs)
    assert [r["n_classes"] for r in rows] == [2, 4] and [r["memory_size"] for r in rows] == [4, 8]
    assert rows[0]["acc_mean"] == pytest.approx(0.8) and rows[1]["acc_std"] == pytest.approx(0.1)


@pytest.mark.parametrize("experiment", ["fig6_cpu", "table4_cpu"])
def test_the_figure_6_and_table_4_grids_compose(experiment):
    from helpers import compose_cfg

    cfg = compose_cfg("pipeline", [f"+experiment={experiment}", "method=dm", "seed=2", "paths.output_dir=/x"])
    assert list(cfg.seeds) == [2] and cfg.dataset.name == "fashion_mnist"
    if experiment == "fig6_cpu":
        assert cfg.protocol.name == "continual" and cfg.protocol.continual.steps == 5
        spec = ContinualSpec.from_cfg(cfg.protocol.continual)
        assert [len(s) for s in step_split(class_order(spec, 10, 2), spec.steps, 10)] == [2] * 5
    else:
        assert cfg.robustness.enabled and len(cfg.robustness.corruptions) == 15 and cfg.ipc == 10


def test_a_kd_students_teacher_gives_the_unseen_classes_no_probability():
    images, labels = _data(2)
    test = TensorImageDataset((images * 255).to(torch.uint8), labels, list("abcdefghij"))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, C))
    splits = step_split(class_order(_spec(), C, 0), 5, C)
    spy = Spy()
    run_steps(images, labels, splits, 1, test, spy, 0, "fresh", "x", teacher=teacher, num_classes=C)
    for k, call in enumerate(spy.calls):
        seen = sorted(c for s in splits[:k + 1] for c in s)
        probs = torch.softmax(call["teacher"](images) / 4.0, 1)
        assert torch.equal((probs > 0).any(0).nonzero().flatten(), torch.tensor(seen))
        assert torch.allclose(probs.sum(1), torch.ones(len(images)))
        unmasked = torch.softmax(teacher(images)[:, seen] / 4.0, 1)  # renormalised over the seen classes
        assert torch.allclose(probs[:, seen], unmasked, atol=1e-6)
    assert isinstance(spy.calls[0]["teacher"], SeenClassesTeacher)
