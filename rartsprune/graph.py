"""Channel groups of an arbitrary model, read from Torch-Pruning's dependency graph.

A *channel group* is a set of output channels that must be removed together: the channels of one layer
plus every channel coupled to them by residual additions, concatenations, depthwise or grouped
convolutions, normalisation layers and the layers that consume them. Torch-Pruning's
`torch_pruning.DependencyGraph` does the tracing; this module turns its groups into plain
descriptors (module *names* and index lists, no live references), decides which groups can be scored
exactly, and explains why the others cannot.

Examples:
    >>> import torch, torchvision
    >>> from rartsprune.graph import analyze_groups
    >>> groups = analyze_groups(torchvision.models.resnet18(), torch.randn(1, 3, 32, 32))
    >>> sorted(g.name for g in groups if g.scorable)[:2]
    ['conv1', 'layer1.0.conv1']
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from .errors import UnsupportedModelError
from .heads import HeadSpec, find_attention_blocks, head_of_qkv_channel
from .layernorm import is_exact_layernorm

__all__ = [
    "GroupMember",
    "ChannelGroup",
    "analyze_groups",
    "build_dependency_graph",
    "safe_index_mapping",
    "preserved_state",
    "resolve_modules",
]

#: Node types of Torch-Pruning whose module carries weights we can name.
_OP_NAMES = {
    tp.ops.OPTYPE.CONV: "conv",
    tp.ops.OPTYPE.DEPTHWISE_CONV: "dwconv",
    tp.ops.OPTYPE.LINEAR: "linear",
    tp.ops.OPTYPE.BN: "bn",
    tp.ops.OPTYPE.LN: "ln",
    tp.ops.OPTYPE.GN: "gn",
    tp.ops.OPTYPE.IN: "in",
    tp.ops.OPTYPE.PRELU: "prelu",
    tp.ops.OPTYPE.EMBED: "embed",
    tp.ops.OPTYPE.PARAMETER: "param",
    tp.ops.OPTYPE.MHA: "mha",
    tp.ops.OPTYPE.LSTM: "lstm",
}
#: Normalisations that mix channels: removing one channel changes the others.
_CROSS_CHANNEL_NORMS = ("ln", "gn")
#: Producers whose output channels cannot carry a foldable per-channel score.
_UNSCORABLE_PRODUCERS = ("mha", "lstm")
#: autograd ops (name prefixes) that mix channels; Torch-Pruning treats them as element-wise.
_CHANNEL_MIXING_GRAD_FNS = (
    "softmax",
    "logsoftmax",
    "nativelayernorm",
    "nativegroupnorm",
    "layernorm",
    "groupnorm",
    "linalgvectornorm",
    "normbackward",
    "stdbackward",
    "varbackward",
    "varmean",
    "stdmean",
    "cumsum",
    "sortbackward",
    "topk",
)


_INDEX_MAPPINGS = ("update_reshape_index_mapping", "update_concat_index_mapping", "update_split_index_mapping")


@contextlib.contextmanager
def safe_index_mapping() -> Iterator[None]:
    """Work around Torch-Pruning crashes while it maps channel indices through views and concatenations.

    ``update_reshape_index_mapping`` divides by an inferred channel count that is 0 for a channel shuffle
    (ShuffleNet), and ``update_concat_index_mapping`` adds up channel counts it could not infer (None) for
    the tuple-passing blocks of DPN. Either crash aborts the whole graph. Inside this context such a node's
    mapping is skipped instead; the channel groups through it are then wrong, and the index checks and the
    dry-run surgery of `rartsprune.attach_scores` leave them unscored. Torch-Pruning is patched only for the
    duration of the block (rartsprune's own graph builds and group queries), never at import time; nested
    blocks are fine.

    Examples:
        >>> with safe_index_mapping():  # doctest: +SKIP
        ...     group = graph.get_pruning_group(conv, pruner.prune_out_channels, [0, 1])
    """
    module = tp.dependency.index_mapping
    originals = {name: getattr(module, name) for name in _INDEX_MAPPINGS}
    if all(getattr(f, "_rartsprune_safe", False) for f in originals.values()):
        yield  # an enclosing block already patched them
        return
    for name, original in originals.items():

        def safe(graph: Any, node: Any, _original: Any = original) -> None:
            try:
                _original(graph, node)
            except (ZeroDivisionError, TypeError, IndexError):
                node.enable_index_mapping = False

        safe._rartsprune_safe = True  # type: ignore[attr-defined]
        setattr(module, name, safe)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


class _GroupTooLarge(RuntimeError):
    """Raised inside Torch-Pruning's group expansion when it exceeds its budget."""


@contextlib.contextmanager
def _bounded_group_expansion(limit: int) -> Iterator[None]:
    """Bound the number of items Torch-Pruning may add while expanding one group.

    On some models (e.g. ReXNet's partial residual additions ``out[:, :c] += x``) the expansion in
    ``DependencyGraph.get_pruning_group`` revisits the same layers with ever new index lists and runs for
    hours; on others (HaloNet's blocked attention) a reshape mapping multiplies the index lists until memory
    runs out. With this bound (items, and indices in all items) it stops with `_GroupTooLarge`
    and the group is reported unsupported.
    """
    group_cls = tp.dependency.group.Group
    original = group_cls.add_dep
    count = [0]

    indices = [0]

    def add_dep(self: Any, dep: Any, idxs: Any) -> None:
        count[0] += 1
        indices[0] += len(idxs)
        if count[0] > limit:
            raise _GroupTooLarge(f"more than {limit} dependency items")
        if indices[0] > 200 * limit:
            raise _GroupTooLarge(f"more than {200 * limit} channel indices (an index mapping exploded)")
        original(self, dep, idxs)

    group_cls.add_dep = add_dep
    try:
        yield
    finally:
        group_cls.add_dep = original


@dataclass(frozen=True)
class GroupMember:
    """One layer (or parameter) touched when the group's channels are removed.

    Attributes:
        name: dotted module name (or parameter name for ``kind == "param"``).
        op: layer kind: ``conv``, ``dwconv``, ``linear``, ``bn``, ``ln``, ``gn``, ``in``, ``prelu``,
            ``embed``, ``param``, ``mha`` or ``lstm``.
        side: ``"out"`` if the group's channels are this layer's output channels, ``"in"`` if the layer
            consumes them.
        idxs: channel indices in this layer.
        root_idxs: the matching channel indices of the group's root layer (same length as ``idxs``).
        dim: for ``kind == "param"``, the pruned dimension of the parameter (else -1).
    """

    name: str
    op: str
    side: str
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]
    dim: int = -1


@dataclass
class ChannelGroup:
    """A prunable set of coupled channels.

    Attributes:
        name: the root layer's module name; the group's key in plans and score banks.
        channels: number of channels of the root layer.
        members: every layer the group touches.
        unit_of_channel: for each root channel, the index of its *unit*. Channels of one unit are
            removed together (grouped convolutions force whole strides of channels); the group's score
            vector has one entry per unit.
        num_units: number of units (``max(unit_of_channel) + 1``).
        status: ``"scored"`` (scored and prunable), ``"protected"`` (reaches the model output),
            ``"ignored"`` (user's ``ignored_layers``), ``"attention"`` (attention internals, left alone),
            ``"inexact"`` (removal would change the other channels, e.g. LayerNorm) or ``"unsupported"``.
        reason: human-readable explanation when ``status != "scored"``.
        placements: ``(module name, module channel idxs, unit idxs)`` where the score multiplies the
            layer's output channels (filled for scored groups).
        in_placements: ``(module name, module input channel idxs, unit idxs)`` where the score multiplies a
            layer's *input* channels (its weight columns): the head scores of an attention block sit on the
            output projection's input (see `rartsprune.heads`).
        attention: for a head group (one unit per attention head), the attention module's name; else ``""``.
        head_dim: for a head group, the width of one head; else 0.
        layernorms: for a group normalised by LayerNorms that ``prune_layernorm=True`` removes exactly, those
            LayerNorms (surgery replaces them by `rartsprune.layernorm.PrunedLayerNorm`); else empty.
    """

    name: str
    channels: int
    members: list[GroupMember]
    unit_of_channel: list[int]
    num_units: int
    status: str = "scored"
    reason: str = ""
    placements: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    in_placements: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    attention: str = ""
    head_dim: int = 0
    layernorms: tuple[str, ...] = ()

    @property
    def scorable(self) -> bool:
        """True when the group carries a score vector."""
        return self.status == "scored"

    def channels_of_units(self, units: Sequence[int]) -> list[int]:
        """Root channel indices belonging to the given units, sorted."""
        wanted = set(int(u) for u in units)
        return [c for c, u in enumerate(self.unit_of_channel) if u in wanted]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (no index lists of members)."""
        return {
            "name": self.name,
            "channels": self.channels,
            "units": self.num_units,
            "status": self.status,
            "reason": self.reason,
            **({"attention": self.attention, "head_dim": self.head_dim} if self.attention else {}),
            "members": [f"{m.name}:{m.op}:{m.side}" for m in self.members],
        }


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore every module's ``training`` flag and every parameter's ``requires_grad`` on exit.

    Torch-Pruning's tracer puts the whole model in eval mode and needs gradients; users must not
    notice either.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


def _call_model(model: nn.Module, example_inputs: Any) -> Any:
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return model(*example_inputs)
    return model(example_inputs)


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _trace(model: nn.Module, example_inputs: Any, train: bool) -> tp.DependencyGraph:
    from .tasks import comparable_outputs  # tasks builds on this module

    def forward(m: nn.Module, x: Any) -> Any:
        m.train(train)  # Torch-Pruning switches to eval mode before calling us
        # a torchvision detector is traced through its raw head outputs: in training mode its forward
        # wants targets and samples proposals, in eval mode its proposals are detached from the RPN head
        return comparable_outputs(m, x)

    # Torch-Pruning removes its recording hooks only when the forward succeeds; a failed training-mode
    # trace (e.g. BatchNorm over one value) would leave them on the user's modules. Remove any hook that
    # was not there before, whatever happens.
    before = {
        (id(m), attr): set(getattr(m, attr, {}).keys()) for m in model.modules() for attr in _HOOK_DICTS
    }
    try:
        with safe_index_mapping():
            return tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=forward,
                ignored_layers=[],
                ignored_params=[],
                unwrapped_parameters=[],
                customized_pruners={},
                verbose=False,
            )
    finally:
        for m in model.modules():
            for attr in _HOOK_DICTS:
                hooks = getattr(m, attr, None)
                if hooks:
                    for key in set(hooks.keys()) - before.get((id(m), attr), set()):
                        del hooks[key]


@contextlib.contextmanager
def _fixed_rng(seed: int = 0) -> Iterator[None]:
    """Run the block with the random generators seeded to ``seed``, restoring their states afterwards.

    A training-mode forward may draw random numbers (dropout, a detector sampling proposals), and the graph
    Torch-Pruning records can depend on them: every trace of one model (at attach, in the dry run, at surgery,
    in `rartsprune.apply_plan`) must see the same draws, and the user's random stream must not move.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def build_dependency_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    """Trace ``model`` with Torch-Pruning, leaving its modes, buffers and ``requires_grad`` flags untouched.

    The trace runs in training mode when the model allows it, so layers used only while training (the
    auxiliary classifiers of GoogLeNet and Inception-v3) are pruned consistently with the rest; models
    that cannot run a training-mode forward on the example inputs (e.g. BatchNorm over a single value)
    are traced in eval mode. BatchNorm running statistics touched by the trace are restored. The trace runs
    with fixed random seeds (the user's generator states are restored), so it records the same graph every
    time. A torchvision detector is traced through `rartsprune.tasks.comparable_outputs` (its backbone, FPN
    and heads up to their raw outputs; the heads on fixed proposals), which reaches every layer with weights
    without targets, proposal sampling or NMS.

    Args:
        model: any ``nn.Module``.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.

    Raises:
        UnsupportedModelError: if tracing fails (the message names the model and the original error).
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]

    def restore_buffers() -> None:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)

    with preserved_state(model), torch.enable_grad(), warnings.catch_warnings(), _fixed_rng():
        warnings.simplefilter("ignore")
        for p in model.parameters():
            p.requires_grad_(True)  # Torch-Pruning traces autograd; frozen weights would hide every layer
        train_error: Exception | None = None
        try:
            try:
                graph = _trace(model, example_inputs, train=True)
            except Exception as exc:  # noqa: BLE001 - retried in eval mode below; a real failure re-raises there
                train_error = exc
                restore_buffers()
                graph = _trace(model, example_inputs, train=False)
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises arbitrary errors on models it cannot trace
            raise UnsupportedModelError(
                f"cannot trace {type(model).__name__} with Torch-Pruning: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            restore_buffers()
    if not graph.module2node:
        raise UnsupportedModelError(
            f"{type(model).__name__}: tracing found no layers (does the forward return tensors that "
            "depend on the model's parameters?)"
        )
    if train_error is not None:
        _warn_untraced(model, graph, train_error)
    return graph


def _warn_untraced(model: nn.Module, graph: tp.DependencyGraph, train_error: Exception) -> None:
    """Warn when an eval-mode trace missed layers with weights (e.g. auxiliary heads used only in training)."""
    traced = set(graph.module2node)
    prunable = tuple(tp.ops.type2class(t) for t in graph.REGISTERED_PRUNERS)  # the layer types a trace records
    missed = [name for name, m in model.named_modules() if isinstance(m, prunable) and m not in traced]
    if missed:
        shown = ", ".join(missed[:5]) + (f" and {len(missed) - 5} more" if len(missed) > 5 else "")
        warnings.warn(
            f"{type(model).__name__} could not run in training mode on the example inputs "
            f"({type(train_error).__name__}: {str(train_error)[:160]}), so it was traced in eval mode, and "
            f"layers the eval-mode forward does not run were not seen: {shown}. Their input channels are not "
            "pruned with the rest, so after surgery they may fail in training mode. Pass example inputs that run "
            "a training-mode forward (full-size images, batch >= 2) or remove those layers.",
            UserWarning,
            stacklevel=3,
        )


def resolve_modules(model: nn.Module, layers: Sequence[nn.Module | str] | None, what: str) -> set[str]:
    """Turn a list of modules or dotted names into the set of their names (and descendants' names)."""
    if layers is None:
        return set()
    if isinstance(layers, (str, nn.Module)):
        raise TypeError(f"{what} must be a list of modules or module names, got a single {type(layers).__name__}")
    by_obj = {id(m): n for n, m in model.named_modules()}
    names = {n for n, _ in model.named_modules()}
    out: set[str] = set()
    for layer in layers:
        if isinstance(layer, str):
            if layer not in names:
                raise ValueError(f"{what}: the model has no module named {layer!r}")
            name = layer
        elif isinstance(layer, nn.Module):
            if id(layer) not in by_obj:
                raise ValueError(f"{what}: {type(layer).__name__} module is not part of the model")
            name = by_obj[id(layer)]
        else:
            raise TypeError(f"{what}: expected nn.Module or str, got {type(layer).__name__}")
        prefix = name + "." if name else ""
        out.update(n for n in names if n == name or n.startswith(prefix))
    return out


def _attention_module_names(model: nn.Module) -> set[str]:
    """Names of attention blocks and everything inside them (their internals are left alone).

    An attention block is an ``nn.MultiheadAttention`` or the innermost module carrying a ``num_heads``
    attribute (timm's ``Attention``, torchvision's ``ShiftedWindowAttention`` ...); an outer block that
    merely stores ``num_heads`` for its attention child (torchvision's ``EncoderBlock``) is not one.
    """
    named = list(model.named_modules())

    def is_attn(m: nn.Module) -> bool:
        return isinstance(m, nn.MultiheadAttention) or hasattr(m, "num_heads")

    roots = []
    for n, m in named:
        if n == "" or not is_attn(m):
            continue
        if isinstance(m, nn.MultiheadAttention) or not any(is_attn(c) for c in m.modules() if c is not m):
            roots.append(n)
    return {n for n, _ in named for r in roots if n == r or n.startswith(r + ".")}


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _channel_groups_of(module: Any, op: str, side: str) -> int:
    """How many equal strides a layer's channels fall into (grouped conv, GroupNorm)."""
    if op == "conv" and isinstance(module, nn.modules.conv._ConvNd):
        return int(module.groups)
    if op == "gn" and isinstance(module, nn.GroupNorm):
        return int(module.num_groups)
    return 1


def side_width(obj: Any, op: str, side: str, dim: int) -> int | None:
    """Number of channels of a layer on one side (None when unknown)."""
    if op == "param":
        return int(obj.shape[dim]) if isinstance(obj, torch.Tensor) else None
    if isinstance(obj, nn.modules.conv._ConvNd):
        return obj.out_channels if side == "out" or op == "dwconv" else obj.in_channels
    if isinstance(obj, nn.Linear):
        return obj.out_features if side == "out" else obj.in_features
    for attr in ("num_features", "num_channels", "embedding_dim", "num_parameters"):
        if hasattr(obj, attr):
            return int(getattr(obj, attr))
    if isinstance(obj, nn.LayerNorm):
        return int(obj.normalized_shape[-1])
    return None


def _index_error(channels: int, members: list[GroupMember], modules: dict[str, Any]) -> str:
    """A member whose indices fall outside its layer (Torch-Pruning's mapping went wrong), or ''."""
    for m in members:
        width = side_width(modules.get(m.name), m.op, m.side, m.dim)
        if m.idxs and width is not None and (max(m.idxs) >= width or min(m.idxs) < 0):
            return f"Torch-Pruning maps its channels outside layer {m.name} ({max(m.idxs)} >= {width})"
        if m.root_idxs and (max(m.root_idxs) >= channels or min(m.root_idxs) < 0):
            return f"Torch-Pruning maps {m.name} to root channels outside [0, {channels})"
    return ""


def _units(channels: int, members: list[GroupMember], modules: dict[str, Any]) -> tuple[list[int], str]:
    """Tie root channels that grouped layers force to be removed together. Returns (unit map, error)."""
    uf = _UnionFind(channels)
    for m in members:
        mod = modules.get(m.name)
        g = _channel_groups_of(mod, m.op, m.side)
        if g <= 1:
            continue
        if m.op == "conv":
            total = mod.out_channels if m.side == "out" else mod.in_channels
        else:
            total = mod.num_channels
        if len(set(m.idxs)) != total:
            return [], f"grouped layer {m.name} ({g} groups) mixes channels of several groups"
        stride = total // g
        first: dict[int, int] = {}
        for i, r in zip(m.idxs, m.root_idxs):
            key = i % stride if m.op == "conv" else i // stride
            if key in first:
                uf.union(first[key], r)
            else:
                first[key] = r
    roots: dict[int, int] = {}
    unit = []
    for c in range(channels):
        r = uf.find(c)
        if r not in roots:
            roots[r] = len(roots)
        unit.append(roots[r])
    return unit, ""


def _placements(
    group: ChannelGroup, graph: tp.DependencyGraph, modules: dict[str, Any], allow_inexact: bool
) -> tuple[list[tuple[str, tuple[int, ...], tuple[int, ...]]], str]:
    """Where the score multiplies output channels so that a zero score zeroes them downstream.

    After the producing layer's normalisation when there is one (conv -> BN -> score -> act), and after
    every layer of the group that produces the channels (every conv/linear output not directly
    normalised, every BatchNorm/InstanceNorm of the group, LayerNorm/GroupNorm only when inexact
    scoring is allowed or the group's LayerNorms are removed exactly, ``group.layernorms``; then the bare
    parameters that write the channels too, e.g. a class token). Returns (placements, error).
    """
    outs = [m for m in group.members if m.side == "out"]
    cross = allow_inexact or bool(group.layernorms)
    normed = {m.name for m in outs if m.op in ("bn", "in") or (cross and m.op in _CROSS_CHANNEL_NORMS)}
    placements = []
    for m in outs:
        mod = modules.get(m.name)
        if m.op in ("conv", "dwconv", "linear", "embed"):
            node = graph.module2node[mod]
            nxt = node.outputs
            follower = graph._module2name.get(nxt[0].module) if len(nxt) == 1 and isinstance(nxt[0].module, nn.Module) else None
            if follower in normed and follower not in group.layernorms:
                continue  # conv -> BN: the score goes after the BN, where BN cannot undo it (an exactly removed
                # LayerNorm needs its input channel zero as well: it sees every channel in its statistics)
            if isinstance(mod, nn.modules.conv._ConvTransposeNd) and mod.groups > 1:
                return [], f"grouped transposed convolution {m.name} cannot carry channel scores"
        elif m.name in normed:
            if not getattr(mod, "affine", getattr(mod, "elementwise_affine", False)) or mod.weight is None:
                return [], f"normalisation {m.name} has no affine parameters to fold a score into"
        elif not (m.op == "param" and group.layernorms):
            continue  # PReLU, parameters: zero in, zero out; the probe checks it
        unit = [group.unit_of_channel[r] for r in m.root_idxs]
        placements.append((m.name, tuple(m.idxs), tuple(unit)))
    if not placements:
        return [], "no layer of the group can carry a score"
    return placements, ""


def _mixing_op(group_items: Any) -> str:
    """Name of a channel-mixing autograd op inside the group, or ''."""
    for item in group_items:
        node = item.dep.target
        if node.type == tp.ops.OPTYPE.SLICE and node.grad_fn is not None:
            dim = getattr(node.grad_fn, "_saved_dim", None)
            sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
            if dim is not None and sizes is not None:
                ndim = len(sizes)
                dim = dim % ndim if ndim else dim
                if dim == 1 or (ndim > 2 and dim == ndim - 1):
                    return "a channel slice with fixed bounds (x[:, a:b])"
        if node.type != tp.ops.OPTYPE.ELEMENTWISE or node.grad_fn is None:
            continue
        fn_name = node.grad_fn.name().lower()
        if fn_name.startswith(_CHANNEL_MIXING_GRAD_FNS):
            return node.grad_fn.name()
    return ""


#: Node types that consume channels (a path through one of them does not carry a layer's channels further).
_CONSUMERS = (tp.ops.OPTYPE.CONV, tp.ops.OPTYPE.DEPTHWISE_CONV, tp.ops.OPTYPE.LINEAR, tp.ops.OPTYPE.EMBED,
              tp.ops.OPTYPE.MHA, tp.ops.OPTYPE.LSTM)


def _feeds_only_outputs(node: Any) -> bool:
    """True when every path from ``node``'s output ends at a model output without passing a consuming layer."""
    seen: set[int] = set()
    stack = list(node.outputs)
    if not stack:
        return True
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.type in _CONSUMERS:
            return False
        stack.extend(n.outputs)
    return True


def _raw_groups(graph: tp.DependencyGraph, failed: list[ChannelGroup]) -> Iterator[Any]:
    """Torch-Pruning's groups rooted at conv / linear layers (as ``DependencyGraph.get_all_groups``).

    A group Torch-Pruning cannot build (its index mappings crash, e.g. through ShuffleNet's channel
    shuffle) is appended to ``failed`` as an unsupported group instead of aborting the whole model.
    """
    visited: set[int] = set()
    for module in list(graph.module2node):
        if not isinstance(module, (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)) or id(module) in visited:
            continue
        pruner = graph.get_pruner_of_module(module)
        channels = None if pruner is None else pruner.get_out_channels(module)
        if channels is None:
            continue
        name = graph._module2name.get(module, "?")
        try:
            with warnings.catch_warnings(), _bounded_group_expansion(max(5_000, 20 * len(graph.module2node))):
                warnings.simplefilter("ignore")
                with safe_index_mapping():
                    group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
        except Exception as exc:  # noqa: BLE001 - Torch-Pruning's index mappings raise arbitrary errors
            visited.add(id(module))
            why = f"Torch-Pruning cannot map its channels: {type(exc).__name__}: {exc}"
            if _feeds_only_outputs(graph.module2node[module]):  # e.g. a detector's box head (reshaped, concatenated)
                status, why = "protected", f"its channels reach the model output ({why})"
            else:
                status = "unsupported"
            failed.append(ChannelGroup(name, channels, [], list(range(channels)), channels, status, why))
            continue
        for item in group.items:
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                visited.add(id(item.dep.target.module))
        yield group


def analyze_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    allow_inexact: bool = False,
    prune_heads: bool = False,
    prune_layernorm: bool = False,
    graph: tp.DependencyGraph | None = None,
) -> list[ChannelGroup]:
    """List every channel group of ``model`` with its status and score placements.

    Args:
        model: the model (not modified; its modes and ``requires_grad`` flags are restored).
        example_inputs: inputs for one forward pass (tensor, tuple or dict of keyword inputs).
        ignored_layers: modules (or dotted names) whose output channels must never be pruned; a group
            is ignored when any of its producing layers is, or sits inside, one of them.
        allow_inexact: also score groups normalised across channels (LayerNorm, GroupNorm). Removing
            such channels changes the remaining channels' normalisation, so surgery is then only
            approximately output-preserving.
        prune_heads: score whole attention heads (one unit per head, rooted at the block's fused qkv
            layer) of the attention blocks `rartsprune.heads.find_attention_blocks` supports; the other
            attention internals stay left alone, with the reason.
        prune_layernorm: also score groups normalised by plain ``nn.LayerNorm`` layers over the channels (a
            vision transformer's embedding width), removed exactly (`rartsprune.layernorm`); the output
            projections of supported attention blocks may then lose output channels.
        graph: a dependency graph already built for ``model`` (internal use).

    Returns:
        Groups in Torch-Pruning's traversal order; check ``status`` / ``reason`` for the unscored ones.
    """
    if graph is None:
        graph = build_dependency_graph(model, example_inputs)
    modules: dict[str, Any] = dict(model.named_modules())
    modules.update({graph._param_to_name[p]: p for p in graph._param_to_name})
    ignored = resolve_modules(model, ignored_layers, "ignored_layers")
    attention = _attention_module_names(model)
    blocks, refused = find_attention_blocks(model) if (prune_heads or prune_layernorm) else ({}, {})
    head_specs, head_refused = (blocks, refused) if prune_heads else ({}, {})
    out_projections = {spec.proj for spec in blocks.values()} if prune_layernorm else set()

    groups: list[ChannelGroup] = []
    for raw in _raw_groups(graph, groups):
        root_mod = raw[0].dep.target.module
        root_name = graph._module2name[root_mod]
        channels = graph.get_out_channels(root_mod)
        members: list[GroupMember] = []
        has_sink = False
        lost_mapping = ""
        for item in raw.items:
            node = item.dep.target
            if node.type == tp.ops.OPTYPE.OUTPUT:
                has_sink = True
                continue
            op = _OP_NAMES.get(node.type)
            if op is None:
                continue  # element-wise, reshape, concat ...: no weights
            name = graph._module2name.get(node.module) if op != "param" else graph._param_to_name.get(node.module)
            if name is None:
                continue
            side = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
            if side == "out" and not node.outputs:
                has_sink = True  # this layer's output is a model output
            dim = int(node.pruning_dim) if op == "param" else -1
            if any(i is None for i in item.idxs) or any(i is None for i in item.root_idxs):
                lost_mapping = name
                continue
            idxs = tuple(int(i) for i in item.idxs)
            members.append(GroupMember(name, op, side, idxs, tuple(int(i) for i in item.root_idxs), dim))
        unit: list[int] = []
        unit_error = _index_error(channels, members, modules)
        if lost_mapping:
            unit_error = f"Torch-Pruning lost the channel mapping of {lost_mapping}"
        if not unit_error:
            unit, unit_error = _units(channels, members, modules)
        group = ChannelGroup(root_name, channels, members, unit or list(range(channels)), (max(unit) + 1) if unit else channels)
        outs = [m for m in members if m.side == "out"]
        consumers = [m for m in members if m.side == "in"]
        mixing = _mixing_op(raw.items)
        norms = [m for m in outs if m.op in _CROSS_CHANNEL_NORMS]
        if prune_layernorm and norms and all(m.op == "ln" and is_exact_layernorm(modules.get(m.name)) for m in norms):
            group.layernorms = tuple(m.name for m in norms)
        if has_sink or not consumers:
            group.status, group.reason = "protected", "its channels reach the model output"
        elif any(m.name in ignored for m in outs):
            group.status, group.reason = "ignored", "contains a layer listed in ignored_layers"
        elif root_name in head_specs:
            _score_heads(group, head_specs[root_name], has_sink, modules)
        elif any(m.name in attention and not (group.layernorms and m.name in out_projections) for m in outs):
            group.status, group.reason = "attention", _attention_reason(outs, head_refused, prune_heads)
        elif any(m.op in _UNSCORABLE_PRODUCERS for m in members):
            bad = next(m for m in members if m.op in _UNSCORABLE_PRODUCERS)
            group.status, group.reason = "unsupported", f"{bad.op} layer {bad.name} cannot be pruned exactly"
        elif unit_error:
            group.status, group.reason = "unsupported", unit_error
        elif not allow_inexact and not group.layernorms and norms:
            bad = norms[0]
            group.status = "inexact"
            group.reason = f"normalised across channels by {bad.name} ({bad.op}); pass allow_inexact=True to score it"
            if bad.op == "ln" and not prune_layernorm:
                group.reason += " (or prune_layernorm=True to remove it exactly)"
        elif mixing.startswith("a channel slice"):
            group.status, group.reason = "unsupported", f"its channels pass through {mixing} in the forward code"
        elif mixing and not allow_inexact:
            group.status, group.reason = "inexact", f"channels are mixed by {mixing}"
        elif group.num_units < 2:
            group.status, group.reason = "unsupported", "a single removable unit (nothing to choose)"
        else:
            placements, error = _placements(group, graph, modules, allow_inexact)
            if error:
                group.status, group.reason = "unsupported", error
            else:
                group.placements = placements
        groups.append(group)
    traced = {g.name for g in groups}
    for block, why in head_refused.items():
        if block not in traced:
            groups.append(ChannelGroup(block, 0, [], [], 0, "attention", f"heads of {block} are left alone: {why}",
                                       attention=block))
    for spec in head_specs.values():
        if spec.qkv not in traced:
            groups.append(ChannelGroup(
                spec.qkv, spec.num_heads * spec.head_dim * 3, [], [], 0, "unsupported",
                f"heads of {spec.name}: its qkv layer is not called as a module (the forward uses its weight "
                "directly, e.g. with a separate q / v bias), so the dependency graph cannot follow the heads",
                attention=spec.name, head_dim=spec.head_dim,
            ))
    return groups


def _attention_reason(outs: list[GroupMember], refused: dict[str, str], prune_heads: bool) -> str:
    """Why a group inside an attention block is not scored."""
    for m in outs:
        for block, why in refused.items():
            if m.name == block or m.name.startswith(block + "."):
                return f"attention internals of {block} are left alone: {why}"
    if prune_heads:
        return "attention internals other than whole heads (head_dim, q / k widths) are left alone"
    return "attention internals (heads / head_dim) are left alone; pass prune_heads=True to score whole heads"


def _score_heads(group: ChannelGroup, spec: HeadSpec, has_sink: bool, modules: dict[str, Any]) -> None:
    """Make the qkv group of an attention block a head group: one unit per head, scored on proj's input.

    The group may only touch the block's qkv (outputs) and proj (inputs), and Torch-Pruning must map each
    head's value rows to that head's columns of proj; otherwise it is left unsupported with the reason.
    Per-head parameters (`HeadSpec.per_head`) are dropped from the members: Torch-Pruning maps channels,
    not heads, onto them, and `rartsprune.heads.remove_heads` slices them instead.
    """
    group.members = [m for m in group.members if m.name not in spec.per_head]
    unit_error = _index_error(group.channels, group.members, modules)
    group.attention, group.head_dim = spec.name, spec.head_dim
    group.unit_of_channel = [head_of_qkv_channel(spec, c) for c in range(group.channels)]
    group.num_units = spec.num_heads
    group.placements = []
    others = [m for m in group.members if m.name not in (spec.qkv, spec.proj)]
    proj = [m for m in group.members if m.name == spec.proj and m.side == "in"]
    if has_sink:
        group.status, group.reason = "protected", "its channels reach the model output"
    elif unit_error:
        group.status, group.reason = "unsupported", f"heads of {spec.name}: {unit_error}"
    elif group.channels != 3 * spec.num_heads * spec.head_dim:
        group.status, group.reason = "unsupported", f"heads of {spec.name}: qkv has {group.channels} outputs"
    elif others:
        group.status = "unsupported"
        group.reason = f"heads of {spec.name} are coupled to {others[0].name} ({others[0].op}), outside qkv and proj"
    elif len(proj) != 1 or len(proj[0].idxs) != spec.num_heads * spec.head_dim:
        group.status, group.reason = "unsupported", f"Torch-Pruning does not map the heads of {spec.name} to {spec.proj}"
    elif any(i // spec.head_dim != group.unit_of_channel[r] for i, r in zip(proj[0].idxs, proj[0].root_idxs)):
        group.status = "unsupported"
        group.reason = f"Torch-Pruning maps the heads of {spec.name} to other columns of {spec.proj} (not the q|k|v layout)"
    elif spec.num_heads < 2:
        group.status, group.reason = "unsupported", "a single head (nothing to choose)"
    else:
        group.in_placements = [(spec.proj, proj[0].idxs, tuple(group.unit_of_channel[r] for r in proj[0].root_idxs))]
