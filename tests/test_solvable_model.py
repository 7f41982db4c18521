"""The solvable model of the RARTS paper (Section III-D) through the real optimizer classes, and its recipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "solvable_model.py"


def _load_recipe():
    return load_script(RECIPE, "solvable_model_recipe")


sm = _load_recipe()


@pytest.mark.parametrize("lam,beta", [(15.0, 15.0), (5.0, 10.0), (20.0, 5.0), (2.0, 15.0)])
def test_rarts_exact_reaches_closed_form_equilibrium(lam, beta):
    opt, traj = sm.run("rarts", 1000, lam=lam, beta=beta, lr=0.03)
    expected = sm.rarts_equilibrium(lam, beta)
    assert type(opt).__name__ == "RARTS" and opt.update == "exact"
    assert traj[-1] == pytest.approx(list(expected), abs=1e-6)
    assert traj[0] == [2.0, -2.0, 0.0]


def test_rarts_equilibrium_at_lam_beta_15_matches_the_paper():
    a, w, y = sm.rarts_equilibrium(15.0, 15.0)
    assert (round(a, 3), round(w, 3), round(y, 3)) == (1.053, 1.018, 0.947)
    _, traj = sm.run("rarts", 1000, lam=15.0, beta=15.0, lr=0.03, mode="fused")
    assert traj[-1] == pytest.approx([a, w, y], abs=1e-6)  # fused has the same fixed point


@pytest.mark.parametrize("method", ["darts1", "milenas"])
def test_darts1_and_milenas_reach_the_spurious_point(method):
    _, traj = sm.run(method, 1000, lam=15.0, lr=0.03)
    alpha, w, y = traj[-1]
    assert (alpha, w) == pytest.approx((2.0, 2.0), abs=1e-6)
    assert y is None


@pytest.mark.parametrize("lr,xi", [(0.03, None), (0.03, 0.1)])
def test_darts2_reaches_two_over_one_plus_two_xi(lr, xi):
    _, traj = sm.run("darts2", 1000, lr=lr, xi=xi)
    step = lr if xi is None else xi
    assert traj[-1][0] == pytest.approx(2.0 / (1.0 + 2.0 * step), abs=1e-6)
    assert traj[-1][1] == pytest.approx(2.0 / (1.0 + 2.0 * step), abs=1e-6)


def test_lagrangian_decreases_monotonically_along_rarts_iterates():
    lam, beta = 15.0, 15.0
    _, traj = sm.run("rarts", 1500, lam=lam, beta=beta, lr=0.005)
    values = [sm.lagrangian(a, w, y, lam, beta) for a, w, y in traj]
    increments = [b - a for a, b in zip(values, values[1:])]
    assert max(increments) <= 1e-12
    assert values[0] - values[-1] > 10.0  # it really moves (L starts at ~76, ends near its minimum)
    assert values[-1] == pytest.approx(sm.lagrangian(*sm.rarts_equilibrium(lam, beta), lam, beta), abs=1e-3)


def test_recipe_cli_writes_json_and_plot(tmp_path):
    out, fig = tmp_path / "out.json", tmp_path / "fig1.png"
    cmd = [sys.executable, str(RECIPE), "--method", "rarts", "--lam", "15", "--beta", "15", "--alpha0", "2",
           "--w0", "-2", "--y0", "0", "--lr", "0.01", "--steps", "25", "--json", str(out), "--plot", str(fig)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {"method", "lam", "beta", "lr", "steps", "trajectory", "final"} <= set(data)
    assert (data["method"], data["lam"], data["beta"], data["lr"], data["steps"]) == ("rarts", 15.0, 15.0, 0.01, 25)
    traj = data["trajectory"]
    assert len(traj) == 26 and all(len(row) == 3 for row in traj)
    assert traj[0] == [2.0, -2.0, 0.0]
    assert data["final"] == {"alpha": traj[-1][0], "w": traj[-1][1], "y": traj[-1][2]}
    # the first step by hand: w1 = w0 - lr(lam(2w0 - 2a0) + beta(w0 - y0)), y1 = y0 - lr(a0 + beta(y0 - w1))
    w1 = -2 - 0.01 * (15 * (2 * -2 - 2 * 2) + 15 * (-2 - 0))
    y1 = 0 - 0.01 * (2 + 15 * (0 - w1))
    a1 = 2 - 0.01 * (15 * (-2 * w1 + 2 * 2) + (y1 - 2))
    assert traj[1] == pytest.approx([a1, w1, y1], abs=1e-12)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000


def test_recipe_one_network_json_has_null_y(tmp_path):
    out = tmp_path / "d.json"
    sm.main(["--method", "darts1", "--steps", "5", "--json", str(out)])
    data = json.loads(out.read_text())
    assert all(row[2] is None for row in data["trajectory"]) and data["final"]["y"] is None
    assert len(data["trajectory"]) == 6


def test_recipe_resume_is_bit_identical(tmp_path):
    ckpt = tmp_path / "ck.pt"
    full = sm.main(["--method", "darts2", "--steps", "40"])
    sm.main(["--method", "darts2", "--steps", "15", "--checkpoint", str(ckpt)])
    resumed = sm.main(["--method", "darts2", "--steps", "40", "--checkpoint", str(ckpt), "--resume"])
    assert resumed["trajectory"] == full["trajectory"]
    assert torch.load(ckpt, weights_only=True)["optimizer"]["num_steps"] == 40


def test_recipe_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        sm.parse_args(["--method", "enas"])
    with pytest.raises(SystemExit):
        sm.parse_args(["--resume"])
