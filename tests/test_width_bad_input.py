"""Every bad input to the width search gets a clear error and leaves the model exactly as it was."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchvision

import rartsprune
from rartsprune.errors import RartsPruneError, SearchError, UnsupportedModelError
from tests.test_width import EXAMPLE, TinyResNet, batches, new_model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"ratio": -0.1}, ValueError, r"ratio must be a number in \[0, 1\)"),
        ({"ratio": 1.0}, ValueError, r"ratio must be a number in \[0, 1\)"),
        ({"ratio": math.nan}, ValueError, "ratio must be"),
        ({"ratio": "0.4"}, ValueError, "ratio must be"),
        ({"ratio": True}, ValueError, "ratio must be"),
        ({"ratio": 0.99}, ValueError, "would empty the model"),
        ({"mode": "magnitude"}, ValueError, "unknown mode 'magnitude'; valid modes: ratio, l1"),
        ({"method": "snip"}, ValueError, "unknown method 'snip'; valid methods: rarts, darts1"),
        ({"importance": "taylor"}, ValueError, "unknown importance"),
        ({"mode": "l1", "method": "random"}, ValueError, "needs a search method"),
        ({"update": "fast"}, ValueError, "update"),
        ({"scope": "block"}, ValueError, "scope"),
        ({"kept_scores": "drop"}, ValueError, "kept_scores must be one of 'fold', 'reset'"),
        ({"round_to": 0}, ValueError, "round_to"),
        ({"example_inputs": torch.randn(1, 1, 16, 16)}, ValueError, "example_inputs do not fit"),
        ({"criterion": nn.CrossEntropyLoss(), "loss_fn": lambda n, b: n(b[0]).sum()}, ValueError, "either criterion"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    model = new_model()
    before = snapshot(model)
    args = {"example_inputs": EXAMPLE, **kwargs}
    with pytest.raises(error, match=match):
        rartsprune.prune(model, **args)
    assert not rartsprune.has_scores(model)
    assert_same(model, before)


def test_models_that_cannot_be_searched() -> None:
    linear_only = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    before = snapshot(linear_only)
    with pytest.raises(UnsupportedModelError, match="no prunable channel group"):
        rartsprune.prune(linear_only, example_inputs=EXAMPLE)
    assert_same(linear_only, before)

    frozen = new_model()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen"):
        rartsprune.prune(frozen, example_inputs=EXAMPLE)
    assert not rartsprune.has_scores(frozen)

    meta = TinyResNet().to("meta")
    with pytest.raises(UnsupportedModelError, match="meta device"):
        rartsprune.prune(meta, example_inputs=EXAMPLE)

    no_bn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    no_bn(EXAMPLE)
    before = snapshot(no_bn)
    with pytest.raises(ValueError, match="slimming.*needs BatchNorm"):
        rartsprune.prune(no_bn, method="slimming", example_inputs=EXAMPLE)
    assert not rartsprune.has_scores(no_bn)
    assert_same(no_bn, before)

    with pytest.raises(ValueError, match="cannot infer example inputs"):
        rartsprune.prune(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))


def test_prune_twice_is_refused() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, example_inputs=EXAMPLE)
    before = snapshot(model)
    with pytest.raises(RartsPruneError, match="already under search"):
        rartsprune.prune(model, example_inputs=EXAMPLE)
    assert_same(model, before)
    assert pruner.step(*batches(1)[0])["loss_v"] > 0  # the first search is unharmed


@pytest.mark.parametrize(
    "batch, match",
    [
        ((torch.randn(4, 1, 16, 16), torch.zeros(4, dtype=torch.long)), "shape"),
        ((torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, dtype=torch.long)), "dtype torch.uint8"),
        ((torch.randn(4, 3, 16, 16), torch.zeros(4)), "targets must be a 1-d integer"),
        ((torch.randn(4, 3, 16, 16), torch.zeros(3, dtype=torch.long)), "one entry per input"),
        (torch.randn(4, 3, 16, 16), "must be \\(inputs, targets\\)"),
        ((torch.randn(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)), "is empty"),
        ((torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 4, 2])), "labels from 0 to 4, but the model's head has 4"),
        ((torch.randn(4, 3, 16, 16), torch.tensor([0, -1, 3, 2])), "labels from -1 to 3"),
    ],
)
def test_bad_batches_leave_the_search_untouched(batch: object, match: str) -> None:
    model = new_model()
    pruner = rartsprune.prune(model, example_inputs=EXAMPLE)
    good = batches(1)[0][0]
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        pruner.step(good, batch)
    with pytest.raises(ValueError, match=match):
        pruner.step(batch, good)
    assert_same(model, before)
    assert pruner.num_steps == 0


def test_step_without_gradients_is_refused() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, example_inputs=EXAMPLE)
    before = snapshot(model)
    for context in (torch.no_grad, torch.inference_mode):
        with context(), pytest.raises(SearchError, match="gradients disabled"):
            pruner.step(*batches(1)[0])
    assert_same(model, before)
    assert pruner.num_steps == 0
    pruner.step(*batches(1)[0])
    assert pruner.num_steps == 1


def test_empty_batch_with_a_custom_loss() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, example_inputs=EXAMPLE,
                              loss_fn=lambda net, b: nn.functional.cross_entropy(net(b[0]), b[1]))
    before = snapshot(model)
    empty = (torch.randn(0, 3, 16, 16), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_v is empty"):
        pruner.step(batches(1)[0][0], empty)
    assert_same(model, before)


def test_resuming_with_other_settings() -> None:
    data = batches(2)
    first = rartsprune.prune(new_model(), ratio=0.4, example_inputs=EXAMPLE)
    first.step(*data[0])
    state = first.state_dict()
    other_search = rartsprune.prune(new_model(), ratio=0.4, example_inputs=EXAMPLE, beta=2.0)
    with pytest.raises(ValueError, match="the checkpoint's search used beta=1.0, this pruner beta=2.0"):
        other_search.load_state_dict(state)
    assert other_search.num_steps == 0
    # a budget brings its own search pressure (BUDGET_DEFAULTS): resuming a ratio-mode search needs its settings
    with pytest.raises(ValueError, match="the checkpoint's search used l1=0.004, this pruner l1=0.0"):
        rartsprune.prune(new_model(), macs=0.6, example_inputs=EXAMPLE).load_state_dict(state)
    same_search = {"l1": 4e-3, "cost_weight": 0.0}
    other_size = rartsprune.prune(new_model(), macs=0.6, example_inputs=EXAMPLE, **same_search)
    with pytest.warns(UserWarning, match=r"ratio=0.4 -> None.*this pruner's selection applies"):
        other_size.load_state_dict(state)
    assert other_size.num_steps == 1
    import warnings

    quiet = rartsprune.prune(new_model(), macs=0.6, example_inputs=EXAMPLE, **same_search)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.load_state_dict(state, other_selection=True)


def test_compiled_model_is_searched_through_its_original_module() -> None:
    model = new_model()
    compiled = torch.compile(model)
    pruner = rartsprune.prune(compiled, ratio=0.25, example_inputs=EXAMPLE)
    assert pruner.model is model and rartsprune.has_scores(model)
    pruner.step(*batches(1)[0])
    assert pruner.finalize() is model
    assert model(EXAMPLE).shape == (1, 4)


def test_non_finite_loss_restores_the_last_good_state() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, example_inputs=EXAMPLE)
    data = batches(2)
    pruner.step(*data[0])
    before = snapshot(model)
    aux_before = snapshot(pruner.search.aux_model)
    x, y = data[1][1]
    poisoned = (torch.full_like(x, math.nan), y)
    with pytest.raises(SearchError, match="restored"):
        pruner.step(data[1][0], poisoned)
    assert_same(model, before)
    assert_same(pruner.search.aux_model, aux_before)
    assert pruner.num_steps == 1
    pruner.step(*data[1])  # and the search goes on
    assert pruner.num_steps == 2


def test_misuse_after_finalize() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, example_inputs=EXAMPLE)
    pruner.finalize()
    for call in (lambda: pruner.step(*batches(1)[0]), pruner.finalize, pruner.state_dict, pruner.selection):
        with pytest.raises(SearchError, match="after finalize"):
            call()
    with pytest.raises(RartsPruneError, match="no rartsprune scores"):
        rartsprune.remove(model)


def test_torchvision_model_with_inferred_inputs() -> None:
    model = torchvision.models.mobilenet_v3_small(num_classes=3)
    pruner = rartsprune.prune(model, ratio=0.3, method="l1_norm")  # example inputs inferred (224 px)
    assert pruner.handle.example_inputs.shape == (1, 3, 224, 224)
    pruner.finalize()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
