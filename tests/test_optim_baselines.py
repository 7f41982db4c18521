"""DARTS (first and second order) and MiLeNAS against hand-written updates and exact second derivatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rartsprune.optim import DARTS, MiLeNAS


class Cell(nn.Module):
    """A small mixed-op net: softmax(alpha) over three candidate ops per layer, two layers, tanh (smooth)."""

    def __init__(self, d: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.alpha = nn.Parameter(0.3 * torch.randn(2, 3))
        self.ops = nn.ModuleList(nn.ModuleList([nn.Linear(d, d), nn.Linear(d, d, bias=False), nn.Identity()])
                                 for _ in range(2))
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        for ops, a in zip(self.ops, self.alpha):
            p = torch.softmax(a, 0)
            x = torch.tanh(sum(pi * op(x) for pi, op in zip(p, ops)))
        return self.head(x)


def make_batches(seed=0, n=12, d=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g))
            for _ in range(2)]


def loss_at(model, weights, alpha, batch):
    x, t = batch
    return F.cross_entropy(functional_call(model, {**weights, "alpha": alpha}, (x,)), t)


def snapshot(model):
    w = {k: v.detach().clone() for k, v in model.named_parameters() if k != "alpha"}
    return w, model.alpha.detach().clone()


def test_darts1_one_step_by_hand():
    torch.manual_seed(0)
    model = Cell().double()
    lr_w, lr_a = 0.1, 0.3
    opt = DARTS(model, [model.alpha], order=1, grad_clip=None,
                weight_optimizer=lambda p: torch.optim.SGD(p, lr=lr_w),
                arch_optimizer=lambda p: torch.optim.SGD(p, lr=lr_a))
    bt, bv = make_batches()
    w, a = snapshot(model)
    a_ = a.clone().requires_grad_(True)
    a1 = a - lr_a * torch.autograd.grad(loss_at(model, w, a_, bv), a_)[0]   # alpha first, with L_v(w, a)
    wp = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    g = torch.autograd.grad(loss_at(model, wp, a1, bt), list(wp.values()))  # then w, with the new alpha
    w1 = {k: w[k] - lr_w * gk for k, gk in zip(w, g)}
    opt.step(bt, bv)
    torch.testing.assert_close(model.alpha.detach(), a1, rtol=0, atol=1e-12)
    for k, v in w1.items():
        torch.testing.assert_close(model.get_parameter(k).detach(), v, rtol=0, atol=1e-12)


def test_milenas_one_step_by_hand():
    torch.manual_seed(1)
    model = Cell().double()
    lr_w, lr_a, lam = 0.1, 0.3, 2.5
    opt = MiLeNAS(model, [model.alpha], lam=lam, grad_clip=None,
                  weight_optimizer=lambda p: torch.optim.SGD(p, lr=lr_w),
                  arch_optimizer=lambda p: torch.optim.SGD(p, lr=lr_a))
    bt, bv = make_batches(1)
    w, a = snapshot(model)
    a_ = a.clone().requires_grad_(True)
    wp = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    gt = torch.autograd.grad(loss_at(model, wp, a_, bt), [*wp.values(), a_])
    gv = torch.autograd.grad(loss_at(model, w, a_, bv), a_)[0]
    a1 = a - lr_a * (gt[-1] + lam * gv)
    w1 = {k: w[k] - lr_w * gk for k, gk in zip(w, gt[:-1])}
    opt.step(bt, bv)
    torch.testing.assert_close(model.alpha.detach(), a1, rtol=0, atol=1e-12)
    for k, v in w1.items():
        torch.testing.assert_close(model.get_parameter(k).detach(), v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("xi", [None, 0.05])
def test_darts2_matches_exact_unrolled_gradient_with_momentum_and_weight_decay(xi):
    """The finite-difference alpha gradient equals d/da L_v(w'(a), a) computed by double backward, with
    w'(a) = w - xi (mu m + grad_w L_t(w, a) + wd w) using the optimizer's momentum buffer and weight decay."""
    torch.manual_seed(2)
    model = Cell().double()
    lr, mu, wd = 0.07, 0.9, 3e-3
    opt = DARTS(model, [model.alpha], order=2, xi=xi, grad_clip=None,
                weight_optimizer=lambda p: torch.optim.SGD(p, lr=lr, momentum=mu, weight_decay=wd),
                arch_optimizer=lambda p: torch.optim.SGD(p, lr=1.0))
    opt.step(*make_batches(5))  # creates momentum buffers
    bt, bv = make_batches(6)
    w, a = snapshot(model)
    names = list(w)
    bufs = {k: opt.optimizers["model"].state[model.get_parameter(k)]["momentum_buffer"].clone() for k in names}
    step = lr if xi is None else xi

    a_ = a.clone().requires_grad_(True)
    wp = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    gt = torch.autograd.grad(loss_at(model, wp, a_, bt), list(wp.values()), create_graph=True)
    w_unrolled = {k: w[k] - step * (mu * bufs[k] + gk + wd * w[k]) for k, gk in zip(names, gt)}
    exact = torch.autograd.grad(loss_at(model, w_unrolled, a_, bv), a_)[0]

    opt.step(bt, bv)
    fd = a - model.alpha.detach()  # arch optimizer is SGD(lr=1): the change is the gradient
    torch.testing.assert_close(fd, exact, rtol=1e-4, atol=1e-7)
    # and the second-order term matters: the result is far from grad_a L_v(w', a) alone
    a2 = a.clone().requires_grad_(True)
    only_first = torch.autograd.grad(loss_at(model, {k: v.detach() for k, v in w_unrolled.items()}, a2, bv), a2)[0]
    assert (exact - only_first).abs().max() > 1e3 * (fd - exact).abs().max()


def test_darts2_restores_weights_before_the_weight_step():
    """After the unrolled/perturbed passes, the weight step starts from w itself (not w +- R v, which is
    ~1e-2 away): the result equals one SGD step from w up to float rounding."""
    torch.manual_seed(3)
    model = Cell().double()
    opt = DARTS(model, [model.alpha], order=2, grad_clip=None,
                weight_optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                arch_optimizer=lambda p: torch.optim.SGD(p, lr=0.2))
    bt, bv = make_batches(7)
    w, _ = snapshot(model)
    opt.step(bt, bv)
    a1 = model.alpha.detach().clone()
    wp = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    g = torch.autograd.grad(loss_at(model, wp, a1, bt), list(wp.values()))
    for (k, v), gk in zip(w.items(), g):
        torch.testing.assert_close(model.get_parameter(k).detach(), v - 0.1 * gk, rtol=0, atol=1e-14)


def test_darts_validation():
    model = Cell()
    with pytest.raises(ValueError, match="order"):
        DARTS(model, [model.alpha], order=3)
    with pytest.raises(ValueError, match="fd_radius"):
        DARTS(model, [model.alpha], order=2, fd_radius=0.0)
    # lam / beta are accepted (shared call signature) and ignored
    assert DARTS(model, [model.alpha], lam=3.0, beta=2.0).order == 1
    assert MiLeNAS(model, [model.alpha], beta=2.0).lam == 1.0
