"""Learnable channel scores (the α of the width search) attached to any model.

`rartsprune.attach_scores` gives every prunable channel group of a model one score vector α, initialised to
1. α multiplies the group's output channels wherever they are produced, placed so that a zero score
makes the channel exactly zero for everything downstream: after the producing layer's normalisation
when there is one (conv → BN → α → activation), and after every layer of the group that produces those
channels. Nothing relies on BatchNorm: a conv or linear layer without normalisation carries α itself.

Two backends put α in place:

* ``"param"`` (default): a `torch.nn.utils.parametrize` parametrization multiplies the layer's weight
  rows and bias by α. ``conv(x, W·α) + b·α == α·conv(x, W, b)``, so this *is* output scaling, computed on the
  (small) weights rather than the (large) activations, and folding α into the weights is exact by
  construction.
* ``"hook"``: a forward hook multiplies the layer's output (only for plain ``torch.nn`` layers).

`remove` folds α into the weights and detaches everything; `has_scores` tells whether scores
are attached.

Examples:
    >>> import torch, torchvision, rartsprune
    >>> model = torchvision.models.resnet18(num_classes=10)
    >>> handle = rartsprune.attach_scores(model, torch.randn(1, 3, 32, 32))
    >>> len(handle.scores) > 0 and rartsprune.has_scores(model)
    True
    >>> model = rartsprune.remove(model)  # folds the scores into the weights
    >>> rartsprune.has_scores(model)
    False
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .errors import RartsPruneError, UnsupportedModelError
from .graph import ChannelGroup, _call_model, preserved_state

__all__ = ["ScoreBank", "ScoreHandle", "remove", "has_scores", "is_pruned", "get_handle", "BANK_ATTR", "ALPHA_PREFIX"]

#: Attribute under which the score bank is kept on the user's model.
BANK_ATTR = "rartsprune_scores"
#: Prefix of the α parameters registered on the user's model.
ALPHA_PREFIX = "rartsprune_alpha_"

_PLAIN_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
)


def _weight_channel_dim(module: nn.Module) -> int:
    """Dimension of ``module.weight`` that indexes output channels."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1
    if isinstance(module, nn.Embedding):
        return 1
    if isinstance(module, nn.LayerNorm):
        return module.weight.dim() - 1
    return 0


def _output_channel_dim(module: nn.Module) -> int:
    """Dimension of the module's output that indexes channels."""
    if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
        return -1
    return 1


class _Scale(nn.Module):
    """Builds the per-channel scale vector of one layer from the scores of the groups it belongs to."""

    def __init__(self, length: int, entries: Sequence[tuple[nn.Parameter, Sequence[int], Sequence[int]]]) -> None:
        super().__init__()
        self.length = int(length)
        self._alphas: list[nn.Parameter] = [a for a, _, _ in entries]  # shared, not registered here
        for i, (_, idxs, units) in enumerate(entries):
            self.register_buffer(f"idx{i}", torch.as_tensor(list(idxs), dtype=torch.long), persistent=False)
            self.register_buffer(f"unit{i}", torch.as_tensor(list(units), dtype=torch.long), persistent=False)

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        """The scale vector: 1 everywhere except where a group's score sits."""
        s = torch.ones(self.length, dtype=like.dtype, device=like.device)
        for i, alpha in enumerate(self._alphas):
            idx = getattr(self, f"idx{i}")
            unit = getattr(self, f"unit{i}")
            if idx.device != like.device:
                idx, unit = idx.to(like.device), unit.to(like.device)
            s = s.index_copy(0, idx, alpha.index_select(0, unit).to(like.dtype))
        return s


class _ScaleParametrization(nn.Module):
    """Parametrization ``t -> t * scale`` along one dimension of a weight or bias."""

    def __init__(self, scale: _Scale, dim: int) -> None:
        super().__init__()
        self.scale = scale
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        shape = [1] * t.dim()
        shape[self.dim] = -1
        return t * self.scale.scale(t).view(shape)


class _OutputScaleHook:
    """Forward hook ``output -> output * scale`` (deep-copyable: its state is copied with the model)."""

    def __init__(self, scale: _Scale, dim: int) -> None:
        self.scale = scale
        self.dim = dim

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        shape = [1] * output.dim()
        shape[self.dim] = -1
        return output * self.scale.scale(output).view(shape)


class ScoreBank:
    """The score vectors of a model and what is known about its channel groups.

    Kept as a plain attribute ``model.rartsprune_scores`` (not a submodule, so ``nn.Sequential`` and
    ``nn.ModuleList`` roots iterate exactly as before). The α vectors themselves are registered on the
    root module as parameters named ``rartsprune_alpha_g0``, ``rartsprune_alpha_g1``, ... so they follow
    the model through ``.to()``, ``state_dict()`` and ``copy.deepcopy``.
    """

    def __init__(
        self,
        groups: list[ChannelGroup],
        example_inputs: Any,
        backend: str,
        allow_inexact: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        self.groups = groups
        self.keys: dict[str, str] = {}
        self.alpha: dict[str, nn.Parameter] = {}
        for g in groups:
            if g.scorable:
                key = f"g{len(self.keys)}"
                self.keys[g.name] = key
                self.alpha[key] = nn.Parameter(torch.ones(g.num_units, device=device))
        self.example_inputs = example_inputs
        self.backend = backend
        self.allow_inexact = allow_inexact
        self.scales: dict[str, _Scale] = {}
        self.placed: dict[str, str] = {}  # module name -> "param" | "hook"
        self.converted: set[str] = set()  # nn.MultiheadAttention blocks replaced by HeadAttention (prune_heads)

    def __repr__(self) -> str:
        n = sum(a.numel() for a in self.alpha.values())
        return f"ScoreBank(groups={len(self.keys)}, channels={n}, backend={self.backend})"


def _install_bank(model: nn.Module, bank: ScoreBank) -> None:
    """Register the bank's α on ``model`` and remember the bank."""
    for key, alpha in bank.alpha.items():
        model.register_parameter(ALPHA_PREFIX + key, alpha)
    setattr(model, BANK_ATTR, bank)


def _uninstall_bank(model: nn.Module) -> ScoreBank:
    """Unregister the α parameters and forget the bank (placements must be gone already)."""
    bank: ScoreBank = getattr(model, BANK_ATTR)
    for key in bank.alpha:
        model._parameters.pop(ALPHA_PREFIX + key, None)
    delattr(model, BANK_ATTR)
    return bank


def _detach(model: nn.Module, fold: bool) -> None:
    """Remove every placement (folding α into the weights when ``fold``) and the bank."""
    bank: ScoreBank = getattr(model, BANK_ATTR)
    _unplace(model, bank, fold=fold)
    _uninstall_bank(model)


class ScoreHandle:
    """A view of the scores attached to a model.

    Attributes:
        model: the scored model.

    Examples:
        >>> handle = rartsprune.attach_scores(model, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
        >>> for name, alpha in handle.named_scores():  # doctest: +SKIP
        ...     print(name, alpha.shape)
    """

    def __init__(self, model: nn.Module) -> None:
        bank = getattr(model, BANK_ATTR, None)
        if not isinstance(bank, ScoreBank):
            raise RartsPruneError(f"{type(model).__name__} has no scores attached; call rartsprune.attach_scores first")
        self.model = model

    @property
    def bank(self) -> ScoreBank:
        bank = getattr(self.model, BANK_ATTR, None)
        if not isinstance(bank, ScoreBank):
            raise RartsPruneError("the scores were removed from this model")
        return bank

    @property
    def groups(self) -> list[ChannelGroup]:
        """The scored groups, in the order of `scores`."""
        return [g for g in self.bank.groups if g.scorable]

    @property
    def all_groups(self) -> list[ChannelGroup]:
        """Every channel group of the model, scored or not (see ``status`` and ``reason``)."""
        return list(self.bank.groups)

    @property
    def scores(self) -> list[nn.Parameter]:
        """The α vectors (leaf parameters), one per scored group."""
        return [self.bank.alpha[self.bank.keys[g.name]] for g in self.groups]

    def score(self, group: str) -> nn.Parameter:
        """The α vector of the group whose root layer is ``group``."""
        key = self.bank.keys.get(group)
        if key is None:
            raise KeyError(f"no scored group named {group!r}; scored groups: {list(self.bank.keys)[:10]}...")
        return self.bank.alpha[key]

    def group(self, name: str) -> ChannelGroup:
        """The group descriptor named ``name`` (its root layer's module name)."""
        for g in self.bank.groups:
            if g.name == name:
                return g
        raise KeyError(f"no channel group named {name!r}")

    def named_scores(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(group name, α)`` pairs."""
        for g in self.groups:
            yield g.name, self.bank.alpha[self.bank.keys[g.name]]

    @property
    def example_inputs(self) -> Any:
        """The example inputs the model was traced with (on the CPU)."""
        return self.bank.example_inputs

    def num_channels(self) -> int:
        """Total number of scored channels (root channels of scored groups)."""
        return sum(g.channels for g in self.groups)

    @torch.no_grad()
    def fill_(self, value: float) -> ScoreHandle:
        """Set every score to ``value`` (e.g. 1.0 to reset)."""
        for a in self.scores:
            a.fill_(value)
        return self

    def summary(self) -> dict[str, Any]:
        """Counts of groups by status and of scored channels."""
        by_status: dict[str, int] = {}
        for g in self.bank.groups:
            by_status[g.status] = by_status.get(g.status, 0) + 1
        return {"groups": by_status, "scored_channels": self.num_channels(), "backend": self.bank.backend}

    def remove(self) -> nn.Module:
        """Fold the scores into the weights and detach them (same as `rartsprune.remove`)."""
        return remove(self.model)

    def __repr__(self) -> str:
        return f"ScoreHandle({type(self.model).__name__}, groups={len(self.groups)}, channels={self.num_channels()})"


def has_scores(module: nn.Module) -> bool:
    """True while ``module`` has rartsprune scores attached (between `attach_scores` and ``finalize`` / `remove`).

    A model that *was* pruned (its channels removed by surgery) has no scores: ``has_scores`` is False for it.

    Examples:
        >>> import torch, torchvision
        >>> from rartsprune import attach_scores, remove
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> _ = attach_scores(model, torch.randn(2, 3, 32, 32)); has_scores(model)
        True
        >>> _ = remove(model); has_scores(model)
        False
    """
    return isinstance(getattr(module, BANK_ATTR, None), ScoreBank)


def is_pruned(module: nn.Module) -> bool:
    """Deprecated alias of `has_scores` (the name read as "was pruned"; it is True while scores are attached).

    Kept for one release; warns with ``DeprecationWarning``.
    """
    warnings.warn("rartsprune.is_pruned is deprecated (it means 'has scores attached'); use rartsprune.has_scores",
                  DeprecationWarning, stacklevel=2)
    return has_scores(module)


def get_handle(model: nn.Module) -> ScoreHandle:
    """The `ScoreHandle` of a model that has scores attached."""
    return ScoreHandle(model)


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _map_tensors(obj: Any, fn: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map_tensors(o, fn) for o in obj]
    if isinstance(obj, Mapping):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _check_inputs(model: nn.Module, example_inputs: Any) -> Any:
    """Validate example inputs and put them on the model's device."""
    if example_inputs is None:
        raise ValueError("example_inputs is required: a tensor (or tuple/dict of inputs) the model accepts")
    device = _model_device(model)
    if device.type == "meta":
        raise UnsupportedModelError(
            f"{type(model).__name__} is on the meta device: materialise its weights (e.g. model.to_empty(device=...) "
            "and load a state_dict) before attaching scores"
        )
    found: list[torch.Tensor] = []
    _map_tensors(example_inputs, found.append)
    if not found:
        raise TypeError(f"example_inputs must contain at least one tensor, got {type(example_inputs).__name__}")
    return _map_tensors(example_inputs, lambda t: t.detach().to(device))


def _tensor_names(module: nn.Module) -> list[str]:
    return [n for n in ("weight", "bias") if getattr(module, n, None) is not None]


def _use_param_backend(module: nn.Module, backend: str) -> bool:
    """Parametrize unless the hook backend was asked for and the layer is a plain torch.nn layer."""
    already = any(parametrize.is_parametrized(module, n) for n in _tensor_names(module))
    plain = type(module) in _PLAIN_TYPES
    if backend == "hook" and plain:
        return False
    if already:
        if plain:
            return False
        raise UnsupportedModelError(
            f"{type(module).__name__} already carries a parametrization and is not a plain torch.nn layer"
        )
    return True


#: Suffix of the `ScoreBank.placed` / `ScoreBank.scales` keys of input-channel placements (head scores).
_IN_SUFFIX = "#in"


def _place(model: nn.Module, bank: ScoreBank) -> None:
    """Install the scale of every placed layer."""
    modules = dict(model.named_modules())
    per_module: dict[str, list[tuple[nn.Parameter, Sequence[int], Sequence[int]]]] = {}
    per_input: dict[str, list[tuple[nn.Parameter, Sequence[int], Sequence[int]]]] = {}
    for g in bank.groups:
        if not g.scorable:
            continue
        alpha = bank.alpha[bank.keys[g.name]]
        for name, idxs, units in g.placements:
            per_module.setdefault(name, []).append((alpha, idxs, units))
        for name, idxs, units in g.in_placements:
            per_input.setdefault(name, []).append((alpha, idxs, units))
    device = _model_device(model)
    param_dims = {m.name: m.dim for g in bank.groups if g.scorable for m in g.members if m.op == "param"}
    for name, entries in per_module.items():
        if name not in modules and name in param_dims:  # a bare parameter writing the channels (a class token)
            owner_name, _, attr = name.rpartition(".")
            owner = modules[owner_name]
            dim = param_dims[name] % getattr(owner, attr).dim()
            scale = _Scale(getattr(owner, attr).shape[dim], entries).to(device)
            bank.scales[name] = scale
            parametrize.register_parametrization(owner, attr, _ScaleParametrization(scale, dim), unsafe=True)
            bank.placed[name] = "param"
            continue
        module = modules[name]
        length = module.weight.shape[_weight_channel_dim(module)]
        scale = _Scale(length, entries).to(device)
        bank.scales[name] = scale
        if _use_param_backend(module, bank.backend) or name in per_input:
            wdim = _weight_channel_dim(module)
            parametrize.register_parametrization(module, "weight", _ScaleParametrization(scale, wdim), unsafe=True)
            if getattr(module, "bias", None) is not None:
                bdim = module.bias.dim() - 1 if isinstance(module, nn.LayerNorm) else 0
                parametrize.register_parametrization(module, "bias", _ScaleParametrization(scale, bdim), unsafe=True)
            bank.placed[name] = "param"
        else:
            module.register_forward_hook(_OutputScaleHook(scale, _output_channel_dim(module)))
            bank.placed[name] = "hook"
    for name, entries in per_input.items():
        # input channels of a Linear: its weight columns (the bias is not touched); always a parametrization
        module = modules[name]
        if not isinstance(module, nn.Linear):
            raise UnsupportedModelError(f"input-channel scores need an nn.Linear, {name} is {type(module).__name__}")
        scale = _Scale(module.weight.shape[1], entries).to(device)
        bank.scales[name + _IN_SUFFIX] = scale
        parametrize.register_parametrization(module, "weight", _ScaleParametrization(scale, 1), unsafe=True)
        bank.placed[name + _IN_SUFFIX] = "param"


def _remove_parametrizations(module: nn.Module, fold: bool) -> None:
    """Remove the score parametrizations of ``module``, keeping the same Parameter objects.

    ``torch.nn.utils.parametrize.remove_parametrizations`` deletes the property from the module's
    generated class, which deep copies of the module share; removing it from a copy (our surgery and
    dry runs work on copies) would break the original. Here the module simply goes back to its original
    class, which no other module is affected by.
    """
    if not parametrize.is_parametrized(module):
        return
    plists = module.parametrizations
    with torch.no_grad():
        values = {t: getattr(module, t).detach().clone() for t in plists} if fold else {}
    module.__class__ = type(module).__bases__[0]
    del module._modules["parametrizations"]
    for t, plist in plists.items():
        original = plist.original
        if fold:
            with torch.no_grad():
                original.copy_(values[t])
        module.register_parameter(t, original)


def _unplace(model: nn.Module, bank: ScoreBank, fold: bool) -> None:
    """Remove every scale, folding α into the weights when ``fold``."""
    modules = dict(model.named_modules())
    for name, kind in list(bank.placed.items()):
        key = name.removesuffix(_IN_SUFFIX)
        module = modules[key] if key in modules else modules[key.rpartition(".")[0]]  # a bare parameter's owner
        if kind == "param":
            _remove_parametrizations(module, fold)
        else:
            for hid, hook in list(module._forward_hooks.items()):
                if isinstance(hook, _OutputScaleHook):
                    if fold:
                        with torch.no_grad():
                            for t in _tensor_names(module):
                                p = getattr(module, t)
                                dim = _weight_channel_dim(module) if t == "weight" else p.dim() - 1
                                shape = [1] * p.dim()
                                shape[dim] = -1
                                p.mul_(hook.scale.scale(p).view(shape))
                    del module._forward_hooks[hid]
        del bank.placed[name]
    bank.scales.clear()


@torch.no_grad()
def _probe_exactness(model: nn.Module, bank: ScoreBank, example_inputs: Any, seed: int = 0) -> dict[str, str]:
    """Zero a random half of every group's units and check the zeros reach every consumer as zeros.

    Returns ``{group name: reason}`` for the groups whose zeroed channels leak (e.g. through an op that
    maps 0 to a nonzero value, or a layer outside the group that re-biases them).
    """
    gen = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    saved = {k: a.detach().clone() for k, a in bank.alpha.items()}
    watch: dict[str, list[tuple[str, nn.Module, torch.Tensor, int]]] = {}
    for g in bank.groups:
        if not g.scorable:
            continue
        alpha = bank.alpha[bank.keys[g.name]]
        perm = torch.randperm(g.num_units, generator=gen)
        zero = perm[: max(1, g.num_units // 2)]
        alpha[zero.to(alpha.device)] = 0.0
        zero_set = set(zero.tolist())
        scored_inputs = {name for name, _, _ in g.in_placements}  # these layers' inputs are not zeroed, their weights are
        for m in g.members:
            module = modules.get(m.name)
            if m.side != "in" or not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or m.name in scored_inputs:
                continue
            idx = [i for i, r in zip(m.idxs, m.root_idxs) if g.unit_of_channel[r] in zero_set]
            if idx:
                dim = -1 if isinstance(module, nn.Linear) else 1
                watch.setdefault(m.name, []).append((g.name, module, torch.tensor(idx), dim))
    leaks: dict[str, str] = {}

    def make_hook(entries: list[tuple[str, nn.Module, torch.Tensor, int]], consumer: str) -> Any:
        def hook(module: nn.Module, inputs: Any) -> None:
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            x = inputs[0]
            for gname, _, idx, dim in entries:
                if x.dim() == 0 or x.shape[dim] <= int(idx.max()):
                    continue
                leak = x.index_select(dim, idx.to(x.device)).abs().max().item()
                if leak > 0 and gname not in leaks:
                    leaks[gname] = f"zeroed channels reach {consumer} as nonzero values (max {leak:.3g})"

        return hook

    handles = [entries[0][1].register_forward_pre_hook(make_hook(entries, name)) for name, entries in watch.items()]
    try:
        with preserved_state(model):
            model.eval()
            _call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
        for k, a in bank.alpha.items():
            a.copy_(saved[k])
    return leaks


def remove(module: nn.Module) -> nn.Module:
    """Fold the scores into the weights and biases and detach everything (hooks, parametrizations, α).

    The model's outputs are unchanged (within float rounding): the current α values become part of the
    weights. Returns the same module, like ``torch.nn.utils.prune.remove``.

    Raises:
        RartsPruneError: if no scores are attached.

    Examples:
        >>> handle = attach_scores(model, x)  # doctest: +SKIP
        >>> rartsprune.remove(model)  # doctest: +SKIP
    """
    if not has_scores(module):
        raise RartsPruneError(f"{type(module).__name__} has no rartsprune scores attached; nothing to remove")
    search = getattr(module, "_rartsprune_search", None)
    if search is not None and hasattr(search, "_detach"):
        search._detach()
    _detach(module, fold=True)
    return module
