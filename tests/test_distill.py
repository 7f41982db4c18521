"""`DistillationLoss`: the teacher is a frozen copy, the loss is the stated mixture, the teacher runs once per
batch, bad settings are refused, and it drives a width search end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rartsprune
from rartsprune.app.pipeline import PruneJob, run
from rartsprune.distill import DistillationLoss
from tests.test_width import EXAMPLE, X, Y, batches, new_model
from tests.test_width_protocols import _preresnet11, tiny


def _counting(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_the_loss_is_the_stated_mixture() -> None:
    torch.manual_seed(0)
    teacher, student = nn.Linear(6, 5), nn.Linear(6, 5)
    x, y = torch.randn(16, 6), torch.randint(0, 5, (16,))
    t = 3.0
    ce = F.cross_entropy(student(x), y)
    p_t = F.softmax(teacher(x) / t, dim=-1)
    kl = (p_t * (p_t.log() - F.log_softmax(student(x) / t, dim=-1))).sum(-1).mean() * t * t
    for weight in (0.0, 0.3, 1.0):
        got = DistillationLoss(teacher, weight=weight, temperature=t)(student, (x, y))
        torch.testing.assert_close(got, (1 - weight) * ce + weight * kl)
    assert DistillationLoss(teacher, weight=1.0)(teacher, (x, y)).item() == pytest.approx(0.0, abs=1e-6)


def test_dense_predictions_distil_per_pixel() -> None:
    torch.manual_seed(0)
    teacher, student = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
    x, y = torch.randn(2, 3, 5, 6), torch.randint(0, 4, (2, 5, 6))
    got = DistillationLoss(teacher, weight=1.0, temperature=1.0)(student, (x, y))
    # the same as distilling each pixel as an image of its own
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3, 1, 1)
    per_pixel = DistillationLoss(nn.Sequential(teacher, nn.Flatten()), weight=1.0, temperature=1.0)
    torch.testing.assert_close(got, per_pixel(nn.Sequential(student, nn.Flatten()), (pixels, y.flatten())))
    mixed = DistillationLoss(teacher, weight=0.5, temperature=1.0)(student, (x, y))
    torch.testing.assert_close(mixed, 0.5 * F.cross_entropy(student(x), y) + 0.5 * got)


def test_the_teacher_is_a_frozen_copy_in_eval_mode() -> None:
    model = new_model()
    model.train()
    kd = DistillationLoss(model, weight=1.0)
    assert kd.teacher is not model and not kd.teacher.training
    assert not any(p.requires_grad for p in kd.teacher.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the user's model is left as it was
    before = copy.deepcopy(kd.teacher.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(X[:16]), Y[:16]).backward()
        opt.step()
    for k, v in kd.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    kd.teacher.train()  # a caller switching everything to train mode does not make the teacher update its BN
    kd(model, (X[:16], Y[:16]))
    assert not kd.teacher.training
    for k, v in kd.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    shared = DistillationLoss(model, copy_teacher=False)
    assert shared.teacher is model and not any(p.requires_grad for p in model.parameters())


def test_training_on_it_brings_the_student_to_the_teacher() -> None:
    torch.manual_seed(1)
    teacher, student = nn.Linear(6, 5), nn.Linear(6, 5)
    kd = DistillationLoss(teacher, weight=1.0, temperature=2.0)
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    x = torch.randn(64, 6)
    batch = (x, torch.zeros(64, dtype=torch.long))  # labels unused at weight 1
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = kd(student, batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.02 * losses[0]
    torch.testing.assert_close(F.softmax(student(x), -1), F.softmax(teacher(x), -1), atol=0.02, rtol=0)


def test_the_teacher_runs_once_per_batch() -> None:
    teacher = nn.Linear(6, 5)
    kd = DistillationLoss(teacher, copy_teacher=False)
    calls = _counting(teacher)
    student = nn.Linear(6, 5)
    a, b = torch.randn(8, 6), torch.randn(8, 6)
    y = torch.zeros(8, dtype=torch.long)
    for batch in ((a, y), (b, y), (a, y), (b, y)):  # the exact RARTS update's order: t, v, t, v
        kd(student, batch)
    assert calls[0] == 2
    first = kd.teacher_logits(a).clone()
    a.mul_(2.0)  # changed in place: its logits are recomputed
    assert calls[0] == 2 and not torch.equal(kd.teacher_logits(a), first) and calls[0] == 3
    kd(student, (a.clone(), y))  # equal values, another tensor: no identity, no reuse
    assert calls[0] == 4


def test_bad_settings_and_batches_are_refused() -> None:
    teacher = nn.Linear(6, 5)
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        DistillationLoss(lambda x: x)  # type: ignore[arg-type]
    for weight in (-0.1, 1.5, "0.5", True, float("nan")):
        with pytest.raises(ValueError, match="weight must be a number in"):
            DistillationLoss(teacher, weight=weight)  # type: ignore[arg-type]
    for t in (0, -1.0, float("inf"), None):
        with pytest.raises(ValueError, match="temperature must be a finite number"):
            DistillationLoss(teacher, temperature=t)  # type: ignore[arg-type]
    kd = DistillationLoss(teacher)
    with pytest.raises(ValueError, match=r"teacher's logits have shape \(4, 5\), the student's \(4, 3\)"):
        kd(nn.Linear(6, 3), (torch.randn(4, 6), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(TypeError, match="wants batches"):
        kd(nn.Linear(6, 5), torch.randn(4, 6))


def test_a_width_search_distils_from_the_unpruned_model() -> None:
    model = new_model()
    reference = copy.deepcopy(model).eval()
    kd = DistillationLoss(model, weight=1.0)
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE, weight_lr=0.05, arch_lr=0.01, loss_fn=kd)
    data = batches(12)
    rows = [pruner.step(bt, bv) for bt, bv in data]
    # the search starts at the teacher (every score 1; BatchNorm in train mode, the teacher's in eval mode)
    student = copy.deepcopy(reference).train()
    assert rows[0]["loss_v"] == pytest.approx(kd(student, data[0][1]).item(), rel=1e-4)
    preview = pruner.selection()
    pruned = pruner.finalize()
    assert pruner.result["prc"] == pytest.approx(preview.prc) and abs(preview.prc - 0.4) < 0.05
    assert pruned(EXAMPLE).shape == reference(EXAMPLE).shape
    for k, v in kd.teacher.state_dict().items():  # the search did not touch the teacher
        torch.testing.assert_close(v, reference.state_dict()[k])


# ---------------------------------------------------------------------------------------------- the job runner
def _spy_losses(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every DistillationLoss the job builds, with the number of its teacher's forward passes."""
    made: list[Any] = []
    original = DistillationLoss.__init__

    def init(self: DistillationLoss, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.calls = _counting(self.teacher)
        made.append(self)

    monkeypatch.setattr(DistillationLoss, "__init__", init)
    return made


def test_a_job_distils_in_the_search_and_the_fine_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = _spy_losses(monkeypatch)
    job = tiny(tmp_path, pretrain_epochs=1, search_epochs=1, finetune_epochs=2, macs=0.6, search_distill=0.5,
               finetune_distill=1.0, distill_temperature=2.0)
    res = run(job)
    baseline = torch.load(tmp_path / "run" / "baseline.pt", weights_only=True)
    search, finetune = made
    assert (search.weight, search.temperature, finetune.weight, finetune.temperature) == (0.5, 2.0, 1.0, 2.0)
    for kd in made:  # both distil from the trained network, unchanged by the search
        for k, v in kd.teacher.state_dict().items():
            torch.testing.assert_close(v, baseline[k])
    steps = [r["steps"] for r in res["history"] if r["phase"] == "search"]
    assert search.calls[0] == 2 * steps[0]  # once per batch of each half, though exact RARTS passes each twice
    assert finetune.calls[0] == 2 * (64 // 16)  # once per fine-tuning batch
    assert res["summary"]["macs_ratio"] == pytest.approx(0.6, rel=0.02)
    plain = run(tiny(tmp_path, pretrain_epochs=1, search_epochs=1, finetune_epochs=2, macs=0.6, search_distill=0,
                     finetune_distill=0, out=str(tmp_path / "plain")))
    loss = lambda r: [h["train_loss"] for h in r["history"] if h["phase"] == "finetune"]  # noqa: E731
    assert loss(res) != loss(plain)  # the distilled fine-tuning optimises another loss
    assert json.loads((tmp_path / "run" / "results.json").read_text())["job"]["search_distill"] == 0.5


def test_a_resumed_job_distils_from_the_network_before_pruning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(pretrain_epochs=1, search_epochs=2, finetune_epochs=1, search_distill=1.0, finetune_distill=0.5)
    run(tiny(tmp_path, **kw, stop_after="search"))
    baseline = torch.load(tmp_path / "run" / "baseline.pt", weights_only=True)
    # the search's checkpoint alone carries the teacher (bench/equal_macs.py resumes copies of it at each budget)
    moved = tmp_path / "copy"
    moved.mkdir()
    (tmp_path / "run" / "checkpoint.pt").rename(moved / "checkpoint.pt")
    made = _spy_losses(monkeypatch)
    res = run(tiny(tmp_path, **kw, resume=True, out=str(moved)))
    assert [h["epoch"] for h in res["history"] if h["phase"] == "search"] == [1, 2]  # not searched again
    (search, finetune) = made
    for kd in made:
        for k, v in kd.teacher.state_dict().items():
            torch.testing.assert_close(v, baseline[k])
    assert finetune.calls[0] > 0


def test_a_search_without_distillation_is_fine_tuned_with_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no pre-training: the network before pruning is init_weights, so a search saved without a teacher still has one
    model = _preresnet11(10)
    torch.save(model.state_dict(), tmp_path / "init.pt")
    kw = dict(init_weights=str(tmp_path / "init.pt"), search_epochs=1, finetune_epochs=1)
    run(tiny(tmp_path, **kw, stop_after="search"))
    made = _spy_losses(monkeypatch)
    run(tiny(tmp_path, **kw, finetune_distill=0.5, resume=True))
    (finetune,) = made
    for k, v in finetune.teacher.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])
    assert finetune.calls[0] == 64 // 16


def test_the_default_distils_when_a_search_prunes_a_trained_network_gradually(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    made = _spy_losses(monkeypatch)
    res = run(tiny(tmp_path, pretrain_epochs=1, search_epochs=1, finetune_epochs=0, macs=0.6))
    assert res["pruning"]["gradual"] == 0.5 and res["pruning"]["search_distill"] == 1.0
    (search,) = made
    assert search.weight == 1.0 and search.calls[0] > 0
    made.clear()
    res = run(tiny(tmp_path, pretrain_epochs=1, search_epochs=1, finetune_epochs=0, macs=0.6, method="l1_norm",
                   gradual=0.5, out=str(tmp_path / "magnitude")))  # gradual magnitude pruning distils as well
    assert res["pruning"]["search_distill"] == 1.0 and [kd.weight for kd in made] == [1.0]
    made.clear()
    for kw in ({"pretrain_epochs": 0, "macs": 0.6}, {"pretrain_epochs": 1, "gradual": 0, "macs": 0.6},
               {"pretrain_epochs": 1, "ratio": 0.4}):  # nothing trained; one-shot; no budget (not gradual)
        out = tmp_path / f"no_{len(list(tmp_path.iterdir()))}"
        res = run(tiny(tmp_path, **kw, search_epochs=1, finetune_epochs=0, out=str(out)))
        assert res["pruning"]["search_distill"] == 0.0 and not made, kw


def test_a_resumed_search_keeps_its_own_distillation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(pretrain_epochs=1, search_epochs=2, finetune_epochs=0, macs=0.6, gradual=0.5)
    run(tiny(tmp_path, **kw, search_distill=0.0, stop_after="search"))
    made = _spy_losses(monkeypatch)
    res = run(tiny(tmp_path, **kw, resume=True))  # search_distill=None: the default continues what was searched
    assert res["pruning"]["search_distill"] == 0.0 and not made


def test_the_default_fine_tunes_a_pruned_trained_network_by_distillation(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    made = _spy_losses(monkeypatch)
    res = run(tiny(tmp_path, pretrain_epochs=1, search_epochs=1, finetune_epochs=1, ratio=0.4))
    assert res["pruning"]["search_distill"] == 0.0 and res["pruning"]["finetune_distill"] == 1.0
    (finetune,) = made  # one-shot (ratio): no distillation in the search, only in the fine-tuning
    baseline = torch.load(tmp_path / "run" / "baseline.pt", weights_only=True)
    for k, v in finetune.teacher.state_dict().items():
        torch.testing.assert_close(v, baseline[k])
    assert finetune.weight == 1.0 and finetune.calls[0] == 64 // 16
    made.clear()
    for kw in ({"pretrain_epochs": 0}, {"pretrain_epochs": 1, "finetune_distill": 0}):  # nothing trained; off
        out = tmp_path / f"no_{len(list(tmp_path.iterdir()))}"
        res = run(tiny(tmp_path, **kw, search_epochs=1, finetune_epochs=1, ratio=0.4, out=str(out)))
        assert res["pruning"]["finetune_distill"] == 0.0 and not made, kw


def test_a_job_resumed_from_an_older_checkpoint_keeps_its_cross_entropy(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # a search saved since the fine-tuning default records its share and the teacher; one saved before it (no
    # share recorded, no teacher) is fine-tuned as it would have been then, with cross-entropy
    kw = dict(pretrain_epochs=1, search_epochs=2, finetune_epochs=1, ratio=0.4)
    run(tiny(tmp_path, **kw, stop_after="search"))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["finetune_distill"] == 1.0 and "teacher" in ckpt
    for key in ("finetune_distill", "teacher"):
        del ckpt[key]
    torch.save(ckpt, tmp_path / "run" / "checkpoint.pt")
    made = _spy_losses(monkeypatch)
    res = run(tiny(tmp_path, **kw, resume=True))
    assert res["pruning"]["finetune_distill"] == 0.0 and not made


def test_a_checkpoint_without_the_teacher_is_refused(tmp_path: Path) -> None:
    run(tiny(tmp_path, pretrain_epochs=1, search_epochs=2, finetune_epochs=0, stop_after="search"))
    with pytest.raises(ValueError, match="does not hold it .*rerun the job from the start"):
        run(tiny(tmp_path, pretrain_epochs=1, search_epochs=2, finetune_epochs=0, finetune_distill=0.5, resume=True))


@pytest.mark.parametrize(("settings", "message"), [
    ({"search_distill": 1.5}, r"search_distill must be None \(the default\) or a number in \[0, 1\]"),
    ({"finetune_distill": -0.1}, r"finetune_distill must be None \(the default\) or a number in \[0, 1\]"),
    ({"finetune_distill": "0.5"}, r"finetune_distill must be None \(the default\) or a number in \[0, 1\]"),
    ({"search_distill": 0.5, "distill_temperature": 0.0}, "distill_temperature must be a finite number > 0"),
    ({"search_distill": 0.5, "pretrain_epochs": 0}, "search_distill distils .*give it a trained one"),
    ({"finetune_distill": 0.5, "pretrain_epochs": 0, "train_during_search": True}, "there is no trained network"),
])
def test_bad_distillation_settings_are_refused(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(tmp_path, **{"pretrain_epochs": 1, **settings})
    assert not (tmp_path / "run").exists()


def test_the_cli_takes_the_distillation_flags() -> None:
    import argparse

    from rartsprune.app.cli import _prune_parser

    parser = _prune_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["--pretrain-epochs", "1", "--search-distill", "0.25", "--finetune-distill", "1",
                              "--distill-temperature", "3"])
    job = PruneJob(**{k: v for k, v in vars(args).items() if not (k in ("ratio", "macs", "params") and v is None)})
    assert (job.search_distill, job.finetune_distill, job.distill_temperature) == (0.25, 1.0, 3.0)
    assert "--finetune-distill" in parser.format_help()
