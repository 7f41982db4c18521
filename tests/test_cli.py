"""The command line and the pipeline behind it: outputs, reloading the pruned model, resume."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision

import rartsprune
from rartsprune.app.pipeline import PruneJob, run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "fake", "--train-subset", "128", "--test-subset", "50", "--batch-size", "32", "--no-progress"]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rartsprune", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_help() -> None:
    out = cli("--help").stdout
    assert "prune" in out and "check" in out and "flops" in out
    out = cli("prune", "--help").stdout
    for flag in ("--model", "--ratio", "--data", "--search-epochs", "--finetune-epochs", "--out", "--resume", "--method"):
        assert flag in out


def test_prune_command_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = cli("prune", "--model", "torchvision:resnet18", "--ratio", "0.5", "--search-epochs", "1",
               "--finetune-epochs", "1", "--pretrain-epochs", "1", "--out", str(out), *TINY)
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["prc"] == pytest.approx(0.5, abs=0.01)
    assert 0 < summary["macs_ratio"] < 1 and 0 < summary["params_ratio"] < 1
    results = json.loads((out / "results.json").read_text())
    for key in ("before", "after_search", "after_prune", "after_finetune", "widths", "wall_time_s", "history"):
        assert key in results
    assert {"pretrain", "search", "finetune", "bn_recalibration"} <= set(results["wall_time_s"])
    assert "test_acc" in results["after_prune_stale_bn"]  # resnet18 has BatchNorm: recalibrated by default
    assert [r["phase"] for r in results["history"]] == ["pretrain", "search", "finetune"]
    assert (out / "scores.png").stat().st_size > 1000 and (out / "widths.png").stat().st_size > 1000
    # the pruned checkpoint is plan + state_dict
    model = torchvision.models.resnet18(num_classes=10)
    rartsprune.apply_plan(model, out / "plan.json", torch.zeros(1, 3, 32, 32))
    model.load_state_dict(torch.load(out / "pruned.pt", weights_only=True))
    assert sum(p.numel() for p in model.parameters()) == results["after_prune"]["params"]
    again = cli("prune", "--model", "torchvision:resnet18", "--out", str(out), *TINY, check=False)
    assert again.returncode != 0 and "--resume" in again.stderr


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rartsprune.app.pipeline as pipeline

    job = PruneJob(model="torchvision:resnet18", data="fake", train_subset=96, test_subset=32, batch_size=16,
                   pretrain_epochs=0, search_epochs=2, finetune_epochs=1, plots=False, progress=False,
                   out=str(tmp_path / "full"))
    full = run(job)

    real_save = pipeline._Job.save
    calls = {"n": 0}

    def crash_after_search_epoch(self: pipeline._Job, phase: str, epoch: int, **state: object) -> None:
        real_save(self, phase, epoch, **state)
        calls["n"] += 1
        if phase == "search" and epoch == 1:
            raise KeyboardInterrupt("simulated crash after the first search epoch")

    monkeypatch.setattr(pipeline._Job, "save", crash_after_search_epoch)
    part = replace(job, out=str(tmp_path / "part"))
    with pytest.raises(KeyboardInterrupt):
        run(part)
    monkeypatch.undo()
    resumed = run(replace(part, resume=True))
    assert resumed["summary"] == full["summary"]
    assert resumed["widths"] == full["widths"]
    a = torch.load(tmp_path / "full" / "pruned.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "pruned.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_check_and_flops_commands() -> None:
    proc = cli("check", "--model", "torchvision:mobilenet_v3_small", "--json")
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    text = cli("check", "--model", "torchvision:mobilenet_v3_small").stdout  # the readable verdict
    assert text.startswith("torchvision:mobilenet_v3_small: PASS")
    assert f"channel groups   {result['groups']} (" in text and "after surgery:" in text
    proc = cli("flops", "--model", "torchvision:resnet18")
    assert "1.82G MACs" in proc.stdout and "11.69M parameters" in proc.stdout
    assert "&nbsp;" not in proc.stdout and proc.stdout.splitlines()[1].split() == ["model", "11.69M", "1.82G"]
    assert "&nbsp;" in cli("flops", "--model", "torchvision:resnet18", "--format", "md").stdout
    counts = json.loads(cli("flops", "--model", "torchvision:resnet18", "--format", "json").stdout)
    assert counts["macs"] == 1_819_065_856 and counts["by_module"]["layer1"]["params"] == 147_968


def test_finetune_lr_and_recalibration_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune_lr sets the fine-tuning optimizer's LR only; bn_recalibration=0 skips the re-estimation."""
    import rartsprune.app.pipeline as pipeline

    lrs: list[float] = []
    real_sgd = pipeline._sgd

    def spy(model: torch.nn.Module, job: PruneJob, lr: float) -> torch.optim.Optimizer:
        lrs.append(lr)
        return real_sgd(model, job, lr)

    monkeypatch.setattr(pipeline, "_sgd", spy)
    job = PruneJob(model="torchvision:resnet18", data="fake", train_subset=64, test_subset=32, batch_size=32,
                   pretrain_epochs=1, search_epochs=1, finetune_epochs=1, lr=0.05, finetune_lr=0.002,
                   bn_recalibration=0, plots=False, progress=False, out=str(tmp_path / "run"))
    res = run(job)
    assert lrs == [0.05, 0.002]  # pretraining at lr, fine-tuning at finetune_lr
    assert "after_prune_stale_bn" not in res and "bn_recalibration" not in res["wall_time_s"]


def test_round_to_flag_takes_auto_or_a_positive_integer(tmp_path: Path) -> None:
    import argparse

    from rartsprune.app.cli import _prune_parser

    parser = _prune_parser(argparse.ArgumentParser().add_subparsers())
    assert parser.parse_args(["--round-to", "auto", "--latency", "0.6"]).round_to == "auto"
    assert parser.parse_args(["--round-to", "8"]).round_to == 8
    for bad in ("0", "eight"):
        proc = cli("prune", "--round-to", bad, "--out", str(tmp_path / "x"), check=False)
        assert proc.returncode == 2 and "positive integer or 'auto'" in proc.stderr
    # 'auto' needs a latency budget: refused before anything runs, nothing written
    proc = cli("prune", "--round-to", "auto", "--macs", "0.5", "--out", str(tmp_path / "y"), *TINY, check=False)
    assert proc.returncode == 2 and "round_to='auto'" in proc.stderr and not (tmp_path / "y").exists()


#: ``check`` on task models: (extra flags, task, input, loss). Detector and segmenter at their default sizes,
#: the video model at an explicit small clip.
TASK_CHECKS = {
    "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn": ([], "detection", "2 x 3x128x128", "detection_loss"),
    "torchvision:mc3_18": (["--size", "4x32x32"], "video", "3x4x32x32", "cross_entropy"),
    "torchvision:lraspp_mobilenet_v3_large": ([], "segmentation", "3x64x64", "segmentation_loss"),
}
_LOSS_LINE = re.compile(r"^  task loss +(\w+) (\S+) \(training mode, scores at 1\); score-gradient norm (\S+), "
                        r"(\d+) of (\d+) score vectors reached$", re.M)


def test_check_runs_the_task_loss_of_detectors_video_and_segmenters(capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rartsprune.app.cli import main

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", offline)  # a weight download would fail the check (exit 2)
    for spec, (extra, task, shape, loss_fn) in TASK_CHECKS.items():
        assert main(["check", "--model", spec, *extra]) == 0, capsys.readouterr()
        captured = capsys.readouterr()
        out = captured.out
        assert out.startswith(f"{spec}: PASS") and "Traceback" not in captured.err, out
        assert f"\n  task             {task}, input {shape}\n" in out, out
        found = _LOSS_LINE.search(out)
        assert found is not None, out
        name, loss, norm, reached, scored = found.groups()
        assert name == loss_fn
        assert math.isfinite(float(loss)) and float(loss) > 0
        assert math.isfinite(float(norm)) and float(norm) > 0
        assert int(reached) == int(scored) > 0  # the loss reaches every score vector
        assert re.search(rf"channel groups +\d+ \(.*\b{scored} scored\)", out), out  # every scored group reached
    # the same numbers as JSON, with the task and the input
    assert main(["check", "--model", "torchvision:mc3_18", "--size", "4x32x32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["task"] == "video" and result["input"] == "3x4x32x32"
    assert result["loss_fn"] == "cross_entropy" and math.isfinite(result["loss"])
    assert result["score_grad_norm"] > 0 and result["scores_without_grad"] == 0
    assert result["pruned_diff"] <= 1e-5 * max(1.0, result["output_scale"])
    # a classifier: no task loss (its check compares logits), the line absent
    assert main(["check", "--model", "torchvision:resnet18"]) == 0
    out = capsys.readouterr().out
    assert "  task             classification, input 3x64x64\n" in out and "task loss" not in out


#: A --size each model cannot take -> the text of the error (exit status 2, one line, no traceback).
BAD_SIZES = {
    ("torchvision:mc3_18", "112"): "video models take clips, 1 number(s) given; the valid form is TxHxW",
    ("torchvision:mvit_v2_s", "8x64x64"): "torchvision builds mvit_v2_s for 16x224x224 clips only",
    ("torchvision:raft_small", "100"): "RAFT needs each side at least 128 px",
    ("torchvision:raft_small", "128x132"): "and a multiple of 8, got 128x132",
    ("torchvision:resnet18", "8x8"): "2 numbers given, the model takes square images; the valid form is S,",
    ("torchvision:lraspp_mobilenet_v3_large", "abc"): "is not numbers separated by 'x'",
    ("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "0"): "every number must be positive",
    ("torchvision:s3d", "8x64x64"): "torchvision:s3d does not run on inputs of size 8x64x64 (RuntimeError:",
}


def test_check_refuses_a_size_the_task_cannot_take(capsys: pytest.CaptureFixture) -> None:
    from rartsprune.app.cli import main

    for (spec, size), message in BAD_SIZES.items():
        assert main(["check", "--model", spec, "--size", size]) == 2, (spec, size)
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("rartsprune check: error: "), captured
        assert message in captured.err and "Traceback" not in captured.err, captured.err
        assert len(captured.err.strip().splitlines()) == 1
    # S3D's error names its default size; an unknown model is one line too
    assert main(["check", "--model", "torchvision:s3d", "--size", "8x64x64"]) == 2
    assert "default for torchvision:s3d: 16x224x224" in capsys.readouterr().err
    assert main(["check", "--model", "torchvision:no_such_net"]) == 2
    assert "torchvision has no model named 'no_such_net'" in capsys.readouterr().err
    # the process' exit status
    proc = cli("check", "--model", "torchvision:r3d_18", "--size", "112", check=False)
    assert proc.returncode == 2 and "the valid form is TxHxW" in proc.stderr and "Traceback" not in proc.stderr


def test_check_scores_heads_and_the_embedding_width_when_asked(capsys: pytest.CaptureFixture) -> None:
    from rartsprune.app.cli import main

    spec = "timm:vit_tiny_patch16_224"
    assert main(["check", "--model", spec, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["ok"] and plain["layernorm_groups"] == 0 and plain["statuses"].get("attention", 0) > 0
    assert main(["check", "--model", spec, "--prune-heads", "--prune-layernorm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{spec}: PASS") and "; 1 through their LayerNorms" in out, out
    assert "attention" not in out.split("channel groups")[1].split("\n")[0]  # heads and embedding width scored
