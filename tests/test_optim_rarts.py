"""RARTS: the update equations, the auxiliary net, guards, AMP and the factory."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rartsprune.errors import SearchError
from rartsprune.optim import DARTS, METHODS, RARTS, MiLeNAS, make_search_optimizer
from rartsprune.split import split_loaders


class GatedNet(nn.Module):
    """A two-layer MLP whose hidden units are gated by sigmoid(alpha); alpha is a registered parameter."""

    def __init__(self, d_in: int = 6, hidden: int = 8, classes: int = 3, bn: bool = False) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.linspace(-1.0, 1.0, hidden))
        self.fc1 = nn.Linear(d_in, hidden)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(x))) * torch.sigmoid(self.alpha))


def batches(seed: int = 0, n: int = 16, d_in: int = 6, classes: int = 3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    def one():
        return torch.randn(n, d_in, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)
    return one(), one()


def sgd(lr):
    return lambda params: torch.optim.SGD(params, lr=lr)


def params_of(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def ce(net, params, batch):
    x, t = batch
    return F.cross_entropy(functional_call(net, params, (x,)), t)


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors)


# ----------------------------------------------------------------------------------------------- equations
@pytest.mark.parametrize("mode", ["exact", "fused"])
def test_one_step_follows_equation_7(mode):
    torch.manual_seed(0)
    lam, beta, lr_w, lr_a = 0.7, 0.3, 0.1, 0.2
    model = GatedNet().double()
    penalty_weight = 0.05
    opt = RARTS(model, [model.alpha], lam=lam, beta=beta, update=mode, aux_init="reinit",
                weight_optimizer=sgd(lr_w), arch_optimizer=sgd(lr_a), grad_clip=None,
                arch_penalty=lambda: penalty_weight * model.alpha.pow(2).sum())
    bt, bv = batches(dtype=torch.float64)
    w, y = params_of(opt.aux_model), params_of(opt.model)
    assert torch.equal(w["alpha"], y["alpha"]) and not torch.equal(w["fc1.weight"], y["fc1.weight"])
    names = [k for k in w if k != "alpha"]
    a0 = w["alpha"].clone().requires_grad_(True)

    # (1) w <- w - eta_w (lam grad_w L_t(w, a) + beta (w - y))
    wp = {k: (v.clone().requires_grad_(True)) for k, v in w.items() if k != "alpha"}
    g_w = dict(zip(names, grads(ce(model, {**wp, "alpha": a0}, bt), [wp[k] for k in names])))
    w1 = {k: w[k] - lr_w * (lam * g_w[k] + beta * (w[k] - y[k])) for k in names}
    # (2) y <- y - eta_y (grad_y L_v(y, a) + beta (y - w_new))
    yp = {k: (v.clone().requires_grad_(True)) for k, v in y.items() if k != "alpha"}
    g_y = dict(zip(names, grads(ce(model, {**yp, "alpha": a0}, bv), [yp[k] for k in names])))
    y1 = {k: y[k] - lr_y * (g_y[k] + beta * (y[k] - w1[k])) for k in names for lr_y in [lr_w]}
    # (3) a <- a - eta_a (lam grad_a L_t(w_?, a) + grad_a L_v(y_?, a) + grad_a penalty)
    w_at, y_at = (w1, y1) if mode == "exact" else (w, y)
    g_at = grads(ce(model, {**{k: w_at[k] for k in names}, "alpha": a0}, bt), [a0])[0]
    g_av = grads(ce(model, {**{k: y_at[k] for k in names}, "alpha": a0}, bv), [a0])[0]
    a1 = a0.detach() - lr_a * (lam * g_at + g_av + 2 * penalty_weight * a0.detach())

    stats = opt.step(bt, bv)
    for k in names:
        torch.testing.assert_close(opt.aux_model.get_parameter(k), w1[k], rtol=0, atol=1e-12)
        torch.testing.assert_close(opt.model.get_parameter(k), y1[k], rtol=0, atol=1e-12)
    torch.testing.assert_close(model.alpha.detach(), a1, rtol=0, atol=1e-12)
    assert opt.aux_model.alpha is model.alpha
    with torch.no_grad():
        lt, lv = float(ce(model, {**w, "alpha": a0}, bt)), float(ce(model, {**y, "alpha": a0}, bv))
    assert stats["loss_t"] == pytest.approx(lt, abs=1e-12)
    assert stats["loss_v"] == pytest.approx(lv, abs=1e-12)
    assert stats["penalty"] == pytest.approx(float(penalty_weight * a0.detach().pow(2).sum()), abs=1e-12)
    with torch.no_grad():
        dist = torch.sqrt(sum(((opt.model.get_parameter(k) - opt.aux_model.get_parameter(k)) ** 2).sum()
                              for k in names))
    assert stats["dist"] == pytest.approx(float(dist), rel=1e-9)
    assert opt.num_steps == 1


def test_exact_and_fused_differ_but_only_in_alpha():
    torch.manual_seed(1)
    results = {}
    for mode in ("exact", "fused"):
        torch.manual_seed(1)
        model = GatedNet()
        opt = RARTS(model, [model.alpha], update=mode, arch_optimizer=sgd(0.5))
        bt, bv = batches()
        opt.step(bt, bv)
        results[mode] = (params_of(opt.model), params_of(opt.aux_model))
    (ye, we), (yf, wf) = results["exact"], results["fused"]
    assert torch.equal(ye["fc1.weight"], yf["fc1.weight"]) and torch.equal(we["fc2.bias"], wf["fc2.bias"])
    assert not torch.equal(ye["alpha"], yf["alpha"])


def test_momentum_weight_decay_and_clipping_apply_on_top():
    torch.manual_seed(2)
    model = GatedNet()
    bt, bv = batches()
    opt = RARTS(model, [model.alpha], beta=0.0, lam=1.0, grad_clip=1e-3)  # default SGD(0.025, 0.9, 3e-4)
    ref = copy.deepcopy(opt.aux_model)
    ref_opt = torch.optim.SGD([p for n, p in ref.named_parameters() if n != "alpha"], lr=0.025,
                              momentum=0.9, weight_decay=3e-4)
    for _ in range(2):
        ref_opt.zero_grad()
        F.cross_entropy(ref(bt[0]), bt[1]).backward()
        torch.nn.utils.clip_grad_norm_([p for n, p in ref.named_parameters() if n != "alpha"], 1e-3)
        ref_opt.step()
        with torch.no_grad():
            ref.alpha.copy_(model.alpha)  # w's update does not depend on the alpha step of this iteration
        opt.step(bt, bv)
        with torch.no_grad():
            ref.alpha.copy_(model.alpha)
    for (name, p), q in zip(ref.named_parameters(), opt.aux_model.parameters()):
        if name != "alpha":
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------- aux net
def test_aux_copy_shares_alpha_and_reinit_differs():
    torch.manual_seed(3)
    model = GatedNet()
    alpha_before = model.alpha.detach().clone()
    opt = RARTS(model, [model.alpha])
    assert opt.aux_model is not model and opt.aux_model.alpha is model.alpha
    assert torch.equal(opt.aux_model.fc1.weight, model.fc1.weight)
    assert opt.aux_model.fc1.weight is not model.fc1.weight
    opt2 = RARTS(model, [model.alpha], aux_init="reinit")
    assert opt2.aux_model.alpha is model.alpha and torch.equal(model.alpha, alpha_before)
    assert not torch.equal(opt2.aux_model.fc1.weight, model.fc1.weight)


def test_aux_model_validation():
    model = GatedNet()
    with pytest.raises(ValueError, match="same object"):
        RARTS(model, [model.alpha], aux_model=model)
    with pytest.raises(ValueError, match="not the architecture parameter"):
        RARTS(model, [model.alpha], aux_model=GatedNet())  # its own alpha
    other = copy.deepcopy(model, memo={id(model.alpha): model.alpha})
    other.fc2 = nn.Linear(8, 4)
    with pytest.raises(ValueError, match="shape"):
        RARTS(model, [model.alpha], aux_model=other)
    shared = copy.deepcopy(model, memo={id(model.alpha): model.alpha, id(model.fc1.weight): model.fc1.weight})
    with pytest.raises(ValueError, match="shares the weight 'fc1.weight'"):
        RARTS(model, [model.alpha], aux_model=shared)
    ok = copy.deepcopy(model, memo={id(model.alpha): model.alpha})
    assert RARTS(model, [model.alpha], aux_model=ok).aux_model is ok


# ----------------------------------------------------------------------------------------------- convergence
class MixedOpNet(nn.Module):
    """softmax(alpha)-weighted mix of a useful op (a linear classifier) and a useless one (zero)."""

    def __init__(self, alpha: nn.Parameter) -> None:
        super().__init__()
        self.alpha = alpha
        self.lin = nn.Linear(8, 3)
        self.bias_only = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        p = torch.softmax(self.alpha, 0)
        return p[0] * self.lin(x) + p[1] * self.bias_only.expand(x.shape[0], 3)


@pytest.mark.parametrize("method", METHODS)
def test_search_on_a_toy_problem_lowers_loss_and_picks_the_useful_op(method):
    torch.manual_seed(4)
    x = torch.randn(512, 8)
    t = (x @ torch.randn(8, 3)).argmax(1)
    data = torch.utils.data.TensorDataset(x, t)
    alpha = nn.Parameter(torch.zeros(2))
    model = MixedOpNet(alpha)
    opt = make_search_optimizer(
        method, model, [alpha], lam=1.0, beta=1.0,
        weight_optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        arch_optimizer=lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.999)),
    )
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), t))
    pairs = split_loaders(data, batch_size=32, seed=0)
    steps = 0
    for _ in range(3):
        for bt, bv in pairs:
            stats = opt.step(bt, bv)
            steps += 1
    with torch.no_grad():
        after = float(F.cross_entropy(opt.model(x), t))
    assert steps == 24 and opt.num_steps == 24
    assert after < 0.4 * before
    assert float(torch.softmax(alpha.detach(), 0)[0]) > 0.8
    assert stats["loss_v"] < before


# ----------------------------------------------------------------------------------------------- guard
def _everything(opt):
    out = {}
    for name, net in [("y", opt.model), ("w", opt.aux_model)]:
        if net is not None:
            for k, v in net.state_dict().items():
                out[f"{name}.{k}"] = v.detach().clone()
    for name, o in opt.optimizers.items():
        for i, st in enumerate(o.state.values()):
            for k, v in st.items():
                if torch.is_tensor(v):
                    out[f"opt.{name}.{i}.{k}"] = v.detach().clone()
    return out


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_loss_restores_everything_and_raises(method):
    torch.manual_seed(5)
    poison = {"on": False}

    def loss_v(net, batch):
        loss = F.cross_entropy(net(batch[0]), batch[1])
        return loss * float("nan") if poison["on"] else loss

    model = GatedNet(bn=True)
    opt = make_search_optimizer(method, model, [model.alpha], loss_fn_v=loss_v)
    bt, bv = batches()
    for _ in range(2):
        opt.step(bt, bv)
    before = _everything(opt)
    ref_state = copy.deepcopy(opt.state_dict())
    poison["on"] = True
    with pytest.raises(SearchError, match=r"non-finite L_v\(.*at step 2"):
        opt.step(bt, bv)
    _assert_same(before, _everything(opt))
    assert opt.num_steps == 2 and model.alpha.grad is None
    # the next good step gives exactly what it would have given without the failed one
    poison["on"] = False
    fresh_model = GatedNet(bn=True)
    fresh = make_search_optimizer(method, fresh_model, [fresh_model.alpha], loss_fn_v=loss_v)
    fresh.load_state_dict(ref_state)
    opt.step(bt, bv)
    fresh.step(bt, bv)
    _assert_same(_everything(opt), _everything(fresh))


def test_nonfinite_gradient_and_penalty_are_named():
    torch.manual_seed(6)
    model = GatedNet()

    def loss_t(net, batch):  # finite value, NaN gradient w.r.t. alpha: 0 * sqrt(0)' = 0 * inf
        return F.cross_entropy(net(batch[0]), batch[1]) + 0.0 * (model.alpha - model.alpha.detach()).sqrt().sum()

    opt = RARTS(model, [model.alpha], loss_fn_t=loss_t)
    before = _everything(opt)
    with pytest.raises(SearchError, match="gradient of the architecture objective at step 0"):
        opt.step(*batches())
    _assert_same(before, _everything(opt))
    opt2 = DARTS(model, [model.alpha], arch_penalty=lambda: model.alpha.sum() * float("inf"))
    with pytest.raises(SearchError, match="arch_penalty"):
        opt2.step(*batches())


def test_exception_in_loss_fn_restores_and_propagates():
    model = GatedNet()
    calls = {"n": 0}

    def loss_v(net, batch):
        calls["n"] += 1
        raise RuntimeError("boom")

    opt = RARTS(model, [model.alpha], loss_fn_v=loss_v)
    before = _everything(opt)
    with pytest.raises(RuntimeError, match="boom"):
        opt.step(*batches())  # w was already updated when L_v failed
    _assert_same(before, _everything(opt))
    assert calls["n"] == 1 and opt.num_steps == 0


def test_bad_loss_return_types():
    model = GatedNet()
    opt = RARTS(model, [model.alpha], loss_fn=lambda net, b: net(b[0]))
    with pytest.raises(TypeError, match="scalar tensor"):
        opt.step(*batches())
    opt = RARTS(model, [model.alpha], loss_fn=lambda net, b: torch.tensor(1.0))
    with pytest.raises(SearchError, match="does not depend"):
        opt.step(*batches())


# ----------------------------------------------------------------------------------------------- AMP
@pytest.mark.parametrize("method", ["rarts", "darts2"])
def test_grad_scaler_without_overflow_is_bit_identical(method):
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        torch.manual_seed(7)
        model = GatedNet()
        opt = make_search_optimizer(method, model, [model.alpha], grad_scaler=scaler)
        for _ in range(3):
            stats = opt.step(*batches())
        runs.append(_everything(opt))
    _assert_same(*runs)
    assert stats["skipped"] == 0.0 and stats["loss_scale"] == 2.0**10


def test_grad_scaler_overflow_skips_the_step_and_backs_off():
    torch.manual_seed(8)
    model = GatedNet()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**126, growth_interval=2)
    opt = RARTS(model, [model.alpha], grad_scaler=scaler,
                loss_fn=lambda net, b: 1e4 * F.cross_entropy(net(b[0]), b[1]))
    before = _everything(opt)
    stats = opt.step(*batches())
    assert stats["skipped"] == 1.0 and stats["loss_scale"] == 2.0**125
    assert opt.num_steps == 0 and opt.skipped_steps == 1
    _assert_same(before, _everything(opt))
    small = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=2)
    opt2 = RARTS(model, [model.alpha], grad_scaler=small)
    scales = [opt2.step(*batches())["loss_scale"] for _ in range(4)]
    assert scales == [4.0, 8.0, 8.0, 16.0]


def test_bfloat16_autocast_step_runs():
    torch.manual_seed(9)
    model = GatedNet()
    a0 = model.alpha.detach().clone()
    opt = RARTS(model, [model.alpha], amp_dtype=torch.bfloat16, arch_optimizer=sgd(0.5))
    stats = opt.step(*batches())
    assert all(map(lambda v: v == v, stats.values())) and stats["loss_t"] > 0
    assert not torch.equal(a0, model.alpha.detach())


# ----------------------------------------------------------------------------------------------- options
def test_schedulers_prox_and_lr_stats():
    torch.manual_seed(10)
    model = GatedNet()
    seen = []

    def prox(lr):
        seen.append(lr)
        model.alpha.clamp_(-0.5, 0.5)

    opt = RARTS(model, [model.alpha], arch_prox=prox,
                weight_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5),
                arch_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.1))
    stats = opt.step(*batches())
    assert (stats["lr"], stats["lr_arch"]) == (0.025, 3e-4) and seen == [3e-4]
    assert float(model.alpha.detach().abs().max()) <= 0.5
    opt.step_schedulers()
    stats = opt.step(*batches())
    assert stats["lr"] == pytest.approx(0.0125) and stats["lr_arch"] == pytest.approx(3e-5)
    assert opt.optimizers["aux_model"].param_groups[0]["lr"] == pytest.approx(0.0125)
    assert set(opt.schedulers) == {"model", "aux_model", "arch"}


def test_constructor_validation():
    model = GatedNet()
    with pytest.raises(TypeError, match="nn.Module"):
        RARTS("net", [model.alpha])
    with pytest.raises(ValueError, match="empty"):
        RARTS(model, [])
    with pytest.raises(ValueError, match="leaf"):
        RARTS(model, [model.alpha * 2])
    with pytest.raises(TypeError, match="floating point"):
        RARTS(model, [torch.zeros(3, dtype=torch.long)])
    with pytest.raises(ValueError, match="twice"):
        RARTS(model, [model.alpha, model.alpha])
    with pytest.raises(ValueError, match="update"):
        RARTS(model, [model.alpha], update="jacobi")
    with pytest.raises(ValueError, match="beta"):
        RARTS(model, [model.alpha], beta=-1.0)
    with pytest.raises(ValueError, match="grad_clip"):
        RARTS(model, [model.alpha], grad_clip=0)
    with pytest.raises(ValueError, match="architecture parameters"):
        RARTS(model, [model.alpha], weight_optimizer=lambda p: torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="no trainable weights"):
        RARTS(nn.Module(), [model.alpha])
    with pytest.raises(SearchError, match="process group"):
        RARTS(model, [model.alpha], distributed=True)
    with pytest.raises(ValueError, match="amp_dtype"):
        RARTS(model, [model.alpha], amp_dtype=torch.float64)


def test_make_search_optimizer_dispatch_and_kwarg_filtering():
    model = GatedNet()
    rarts_only = dict(lam=2.0, beta=3.0, update="fused", aux_init="reinit", xi=0.01)
    built = {m: make_search_optimizer(m, model, [model.alpha], **rarts_only) for m in METHODS}
    assert isinstance(built["rarts"], RARTS) and built["rarts"].update == "fused" and built["rarts"].beta == 3.0
    assert isinstance(built["darts1"], DARTS) and built["darts1"].order == 1
    assert isinstance(built["darts2"], DARTS) and built["darts2"].order == 2 and built["darts2"].xi == 0.01
    assert isinstance(built["milenas"], MiLeNAS) and built["milenas"].lam == 2.0
    with pytest.raises(ValueError, match="rarts, darts1, darts2, milenas"):
        make_search_optimizer("enas", model, [model.alpha])
    with pytest.raises(ValueError, match="order"):
        make_search_optimizer("darts1", model, [model.alpha], order=2)
    with pytest.raises(TypeError):
        make_search_optimizer("rarts", model, [model.alpha], lamda=1.0)
    assert METHODS == ("rarts", "darts1", "darts2", "milenas")


def test_guard_off_still_raises_but_does_not_restore():
    torch.manual_seed(11)
    model = GatedNet()
    poison = {"on": True}

    def loss_v(net, batch):
        loss = F.cross_entropy(net(batch[0]), batch[1])
        return loss * float("nan") if poison["on"] else loss

    opt = RARTS(model, [model.alpha], loss_fn_v=loss_v, guard_nonfinite=False)
    w_before = opt.aux_model.fc1.weight.detach().clone()
    with pytest.raises(SearchError, match="not undone"):
        opt.step(*batches())
    assert not torch.equal(w_before, opt.aux_model.fc1.weight.detach())  # step (1) happened and stays



def test_the_former_mode_keyword_still_works_with_a_deprecation_warning() -> None:
    torch.manual_seed(0)
    model = GatedNet()
    with pytest.warns(DeprecationWarning, match="update="):
        opt = RARTS(model, [model.alpha], mode="fused")
    assert opt.update == "fused"
    with pytest.warns(DeprecationWarning, match="RARTS.update"):
        assert opt.mode == "fused"
    state = opt.state_dict()
    state["hparams"] = {"lam": 1.0, "beta": 1.0, "mode": "exact"}  # a checkpoint saved before the rename
    opt.load_state_dict(state)
    assert opt.update == "exact"
