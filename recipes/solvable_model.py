"""The analytically solvable model of the RARTS paper (Section III-D, Fig. 1), run through rartsprune.optim.

Scalar "networks" (one ``nn.Parameter`` each) and a scalar architecture parameter alpha, with

    L_v(y, a) = a * y - 2a + 1            L_t(w, a) = w^2 - 2aw + a^2

so the bilevel problem min_a L_v(w*(a), a), w*(a) = argmin_w L_t = a, has its global minimum at
(a, w) = (1, 1). One-network methods use their single net as w in both losses. Every method runs through the
same optimizer classes users call (``make_search_optimizer``), with plain SGD (no momentum, no weight decay,
no gradient clipping) at learning rate ``--lr`` for every variable. Known limits:

* RARTS (exact) converges to (a, w, y) = (4bl, 4bl - 2b, 4bl - 2b - 4l) / (4bl - b - 2l)  [l = lam, b = beta];
* DARTS first order and MiLeNAS converge to the spurious point (2, 2);
* DARTS second order with unroll step xi converges to a = 2 / (1 + 2 xi).

Usage::

    python recipes/solvable_model.py --method rarts --lam 15 --beta 15 --alpha0 2 --w0 -2 --y0 0 \\
        --lr 0.01 --steps 20000 --json out.json --plot fig1.png

The JSON holds ``method, lam, beta, lr, steps, trajectory ([[alpha, w, y], ...]: the initial point, then one
row per step; y is null for one-network methods), final {alpha, w, y}`` and, where known, ``predicted``.
``--plot`` draws Fig. 1: three panels (vary lam, vary beta, vary y0) of RARTS trajectories in the (alpha, w)
plane, with first-order DARTS for reference and the global minimum (1, 1) marked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rartsprune.app.loop import atomic_save  # noqa: E402
from rartsprune.optim import METHODS, SearchOptimizer, make_search_optimizer  # noqa: E402

ONE_NET = ("darts1", "darts2", "milenas")


class Scalar(nn.Module):
    """A one-parameter "network": ``forward()`` returns its value."""

    def __init__(self, value: float, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value), dtype=dtype))

    def forward(self, batch: Any = None) -> Tensor:
        return self.value


def losses(alpha: Tensor) -> tuple[Callable[[nn.Module, Any], Tensor], Callable[[nn.Module, Any], Tensor]]:
    """``(loss_fn_t, loss_fn_v)`` closures over alpha for the optimizer's ``loss_fn_t`` / ``loss_fn_v``."""

    def loss_t(net: nn.Module, batch: Any) -> Tensor:
        w = net(batch)
        return w * w - 2 * alpha * w + alpha * alpha

    def loss_v(net: nn.Module, batch: Any) -> Tensor:
        y = net(batch)
        return alpha * y - 2 * alpha + 1

    return loss_t, loss_v


def rarts_equilibrium(lam: float, beta: float) -> tuple[float, float, float]:
    """Closed-form fixed point (alpha, w, y) of RARTS on the solvable model."""
    d = 4 * beta * lam - beta - 2 * lam
    return 4 * beta * lam / d, (4 * beta * lam - 2 * beta) / d, (4 * beta * lam - 2 * beta - 4 * lam) / d


def lagrangian(alpha: float, w: float, y: float, lam: float, beta: float) -> float:
    """L = L_v(y, a) + lam * L_t(w, a) + beta/2 (y - w)^2 (Theorem 1 says RARTS decreases it)."""
    return alpha * y - 2 * alpha + 1 + lam * (w - alpha) ** 2 + beta / 2 * (y - w) ** 2


def predicted(method: str, lam: float, beta: float, xi: float) -> dict[str, float] | None:
    """The known limit of ``method`` (None where there is no closed form here)."""
    if method == "rarts":
        if 4 * beta * lam - beta - 2 * lam <= 0:
            return None
        a, w, y = rarts_equilibrium(lam, beta)
        return {"alpha": a, "w": w, "y": y}
    if method in ("darts1", "milenas"):
        return {"alpha": 2.0, "w": 2.0}
    a = 2.0 / (1.0 + 2.0 * xi)
    return {"alpha": a, "w": a}


def build(
    method: str, *, lam: float = 15.0, beta: float = 15.0, alpha0: float = 2.0, w0: float = -2.0,
    y0: float = 0.0, lr: float = 0.01, mode: str = "exact", xi: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> SearchOptimizer:
    """The search optimizer for ``method`` on the solvable model (plain SGD at ``lr`` everywhere)."""
    alpha = nn.Parameter(torch.tensor(float(alpha0), dtype=dtype))
    loss_t, loss_v = losses(alpha)

    def sgd(params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)

    common: dict[str, Any] = dict(
        loss_fn_t=loss_t, loss_fn_v=loss_v, weight_optimizer=sgd, arch_optimizer=sgd, grad_clip=None,
        lam=lam, beta=beta, update=mode, xi=xi,
    )
    if method == "rarts":
        return make_search_optimizer(method, Scalar(y0, dtype), [alpha], aux_model=Scalar(w0, dtype), **common)
    return make_search_optimizer(method, Scalar(w0, dtype), [alpha], **common)


def point(opt: SearchOptimizer) -> list[float | None]:
    """Current ``[alpha, w, y]`` (y None for one-network methods)."""
    alpha = float(opt.arch_params[0].detach())
    if opt.aux_model is None:
        return [alpha, float(opt.model.value.detach()), None]
    return [alpha, float(opt.aux_model.value.detach()), float(opt.model.value.detach())]


def run(
    method: str, steps: int, *, progress: bool = False, trajectory: list[list[float | None]] | None = None,
    opt: SearchOptimizer | None = None, checkpoint: Path | None = None, checkpoint_every: int = 0,
    **kwargs: Any,
) -> tuple[SearchOptimizer, list[list[float | None]]]:
    """Run ``steps`` search steps (continuing ``opt``/``trajectory`` when given); return both."""
    opt = opt if opt is not None else build(method, **kwargs)
    traj = trajectory if trajectory is not None else [point(opt)]
    start = opt.num_steps
    for _ in tqdm(range(start, steps), desc=method, disable=None if progress else True, initial=start, total=steps):
        opt.step(None, None)
        traj.append(point(opt))
        if checkpoint is not None and checkpoint_every and opt.num_steps % checkpoint_every == 0:
            save_checkpoint(checkpoint, opt, traj)
    return opt, traj


def save_checkpoint(path: Path, opt: SearchOptimizer, traj: list[list[float | None]]) -> None:
    """Write ``{"optimizer": opt.state_dict(), "trajectory": traj}`` atomically."""
    atomic_save({"optimizer": opt.state_dict(), "trajectory": traj}, path)


def plot_figure(path: Path, args: argparse.Namespace) -> None:
    """Fig. 1 of the paper: RARTS trajectories in the (alpha, w) plane for varied lam, beta and y0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    common = dict(alpha0=args.alpha0, w0=args.w0, lr=args.lr, mode=args.mode)
    panels: list[tuple[str, list[tuple[str, dict[str, float]]]]] = [
        (f"vary $\\lambda$ ($\\beta$={args.beta:g})",
         [(f"$\\lambda$={v:g}", dict(lam=v, beta=args.beta, y0=args.y0)) for v in (2.0, 5.0, args.lam)]),
        (f"vary $\\beta$ ($\\lambda$={args.lam:g})",
         [(f"$\\beta$={v:g}", dict(lam=args.lam, beta=v, y0=args.y0)) for v in (2.0, 5.0, args.beta)]),
        ("vary $y_0$", [(f"$y_0$={v:g}", dict(lam=args.lam, beta=args.beta, y0=v)) for v in (-2.0, 0.0, 2.0)]),
    ]
    _, darts = run("darts1", args.steps, **common)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, (title, runs) in zip(axes, panels):
        for label, kw in tqdm(runs, desc=title, disable=not sys.stderr.isatty()):
            _, traj = run("rarts", args.steps, **common, **kw)
            ax.plot([p[0] for p in traj], [p[1] for p in traj], lw=1.4, label=f"RARTS {label}")
            ax.plot(traj[-1][0], traj[-1][1], "o", ms=4, color=ax.lines[-1].get_color())
        ax.plot([p[0] for p in darts], [p[1] for p in darts], "k--", lw=1.2, label="DARTS (1st order)")
        ax.plot(2, 2, "kx", ms=8)
        ax.plot(1, 1, "r*", ms=14, label="global minimum (1, 1)")
        ax.set_xlabel("$\\alpha$")
        ax.set_ylabel("$w$")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Solvable model: trajectories from ($\\alpha_0$, $w_0$) = ({args.alpha0:g}, {args.w0:g}), "
                 f"lr {args.lr:g}, {args.steps} steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="rarts")
    p.add_argument("--lam", type=float, default=15.0, help="lambda (RARTS, MiLeNAS)")
    p.add_argument("--beta", type=float, default=15.0, help="beta (RARTS)")
    p.add_argument("--alpha0", type=float, default=2.0)
    p.add_argument("--w0", type=float, default=-2.0)
    p.add_argument("--y0", type=float, default=0.0, help="initial y (RARTS only)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of every variable")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--mode", choices=("exact", "fused"), default="exact", help="RARTS mode")
    p.add_argument("--xi", type=float, default=None, help="DARTS-2 unroll step (default: the weight lr)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--plot", type=Path, default=None, help="also draw the paper's Fig. 1 here (PNG)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file (written every "
                   "--checkpoint-every steps and at the end)")
    p.add_argument("--checkpoint-every", type=int, default=5000)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    args = p.parse_args(argv)
    if args.steps < 0:
        p.error("--steps must be >= 0")
    if not args.lr > 0:
        p.error("--lr must be > 0")
    if args.resume and args.checkpoint is None:
        p.error("--resume needs --checkpoint")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    kwargs = dict(lam=args.lam, beta=args.beta, alpha0=args.alpha0, w0=args.w0, y0=args.y0, lr=args.lr,
                  mode=args.mode, xi=args.xi)
    opt = build(args.method, **kwargs)
    traj = None
    if args.resume and args.checkpoint.exists():
        ckpt = torch.load(args.checkpoint, weights_only=True)
        opt.load_state_dict(ckpt["optimizer"])
        traj = [list(p) for p in ckpt["trajectory"]]
        print(f"resumed from {args.checkpoint} at step {opt.num_steps}", file=sys.stderr)
    opt, traj = run(args.method, args.steps, opt=opt, trajectory=traj, progress=True,
                    checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
    if args.checkpoint is not None:
        save_checkpoint(args.checkpoint, opt, traj)
    alpha, w, y = traj[-1]
    xi = args.xi if args.xi is not None else args.lr
    result: dict[str, Any] = {
        "method": args.method, "lam": args.lam, "beta": args.beta, "lr": args.lr, "steps": args.steps,
        "mode": args.mode if args.method == "rarts" else None,
        "xi": xi if args.method == "darts2" else None,
        "initial": {"alpha": args.alpha0, "w": args.w0, "y": args.y0 if args.method == "rarts" else None},
        "trajectory": traj,
        "final": {"alpha": alpha, "w": w, "y": y},
        "predicted": predicted(args.method, args.lam, args.beta, xi),
    }
    if args.method == "rarts":
        result["final_lagrangian"] = lagrangian(alpha, w, y, args.lam, args.beta)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result))
    if args.plot is not None:
        plot_figure(args.plot, args)
    finals = ", ".join(f"{k}={v:.6f}" for k, v in result["final"].items() if v is not None)
    print(f"{args.method}: {finals}" + (f"  (predicted {result['predicted']})" if result["predicted"] else ""))
    if not all(math.isfinite(v) for v in (alpha, w) if v is not None):
        raise SystemExit("the run diverged (non-finite values); lower --lr")
    return result


if __name__ == "__main__":
    main()
