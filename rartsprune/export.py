"""Export a pruned model: ``torch.export``, ONNX or TorchScript, checked against the module.

A pruned model is a plain ``nn.Module`` (after `WidthPruner.finalize`, `rartsprune.apply_surgery` or
`load_pruned`), so the standard exporters apply. `export_model` adds what a deployment needs on top:
eval mode for the export (the user's train/eval state is restored afterwards), a dynamic batch
dimension, refusals with the cause named (scores still attached, a missing ONNX package, the exporter's
own error), and a check that reloads the written file and compares its outputs to the module's.

`load_pruned` rebuilds a pruned module from what a job writes (``plan.json`` + ``pruned.pt``, see
`rartsprune.app.pipeline`); ``python -m rartsprune export`` does both from the command line.

ONNX needs the ``export`` extra (``pip install "rartsprune[export]"``: onnx, onnxscript for the
``torch.export``-based exporter, onnxruntime for the check).

Examples:
    >>> from rartsprune.export import export_model
    >>> model = torchvision.models.resnet18(num_classes=10)  # doctest: +SKIP
    >>> x = torch.randn(2, 3, 64, 64)  # doctest: +SKIP
    >>> pruner = rartsprune.prune(model, ratio=0.4, example_inputs=x)  # doctest: +SKIP
    >>> model = pruner.finalize()  # search steps in between: see rartsprune.prune  # doctest: +SKIP
    >>> result = export_model(model, x, "resnet18.pt2")  # doctest: +SKIP
    >>> result.max_diff <= 1e-5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .check import _flat
from .errors import RartsPruneError
from .graph import preserved_state
from .scores import _check_inputs, has_scores
from .surgery import PruningPlan, apply_plan

__all__ = ["FORMATS", "ExportError", "ExportResult", "export_model", "format_for_path", "load_pruned", "read_plan"]

#: Export formats: the ``torch.export`` program (``.pt2``), ONNX (``.onnx``), TorchScript (``torch.jit.trace``).
FORMATS: tuple[str, ...] = ("torch_export", "onnx", "torchscript")

#: The usual file suffix of each format (`format_for_path` reads it back).
SUFFIXES: dict[str, str] = {"torch_export": ".pt2", "onnx": ".onnx", "torchscript": ".ts"}

#: Packages of the ``export`` extra that ONNX export needs (onnxruntime is optional: it runs the check).
_ONNX_EXTRA = 'pip install "rartsprune[export]"'

#: ONNX files hold at most 2 GiB; above this many parameter bytes the weights go to ``PATH.data``.
_ONNX_INLINE_BYTES = 1_800_000_000


class ExportError(RartsPruneError):
    """The model cannot be exported, or the exported file computes something else; nothing is written."""


@dataclass
class ExportResult:
    """What `export_model` wrote and how closely the reloaded file matches the module.

    Attributes:
        path: the exported file (ONNX models over 2 GiB also write ``PATH.data`` beside it).
        format: one of `FORMATS`.
        dynamic_batch: whether the batch dimension was exported as dynamic.
        checked: whether the file was reloaded and run (``False`` with ``check=False``, or for ONNX when
            onnxruntime is not installed).
        batch_sizes: the batch sizes the check ran.
        max_diff: largest absolute difference between the file's and the module's outputs (NaN unchecked).
        output_scale: largest absolute output of the module on the checked inputs.
        seconds: wall time of export and check.
        exporter: what wrote the file: ``"torch.export"``, ``"torch.jit.trace"``, or for ONNX ``"dynamo"``
            (``torch.onnx.export(dynamo=True)``) or ``"torchscript"`` (the TorchScript-based exporter, used
            where the dynamo-based one fails: BEiT, Twins and MaxViT in timm, for instance).
    """

    path: Path
    format: str
    dynamic_batch: bool
    checked: bool
    batch_sizes: tuple[int, ...] = ()
    max_diff: float = math.nan
    output_scale: float = math.nan
    seconds: float = 0.0
    exporter: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "path": str(self.path), "format": self.format, "dynamic_batch": self.dynamic_batch,
            "checked": self.checked, "batch_sizes": list(self.batch_sizes), "max_diff": self.max_diff,
            "output_scale": self.output_scale, "seconds": round(self.seconds, 3), "exporter": self.exporter,
        }


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The export format a file name asks for: ``.onnx`` → onnx, ``.pt2`` → torch_export, ``.ts`` → torchscript.

    Examples:
        >>> format_for_path("model.onnx"), format_for_path("model.pt2")
        ('onnx', 'torch_export')

    Raises:
        ValueError: another suffix (pass the format explicitly).
    """
    suffix = Path(path).suffix.lower()
    for fmt, ext in SUFFIXES.items():
        if suffix == ext:
            return fmt
    raise ValueError(
        f"cannot tell the export format from {os.fspath(path)!r}: use a suffix among "
        f"{', '.join(f'{e} ({f})' for f, e in SUFFIXES.items())} or name the format"
    )


def _as_args(model: nn.Module, example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """Example inputs as a tuple of positional tensors on the model's device."""
    if isinstance(example_inputs, Mapping):
        raise TypeError("export_model takes positional inputs: a tensor or a tuple of tensors, not a dict")
    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise TypeError(
            f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}"
        )
    return tuple(_check_inputs(model, tuple(args)))


def _batch_of(args: tuple[torch.Tensor, ...]) -> int:
    sizes = {a.shape[0] if a.dim() else None for a in args}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "dynamic_batch=True needs every input to have the same first (batch) dimension; got shapes "
            f"{[tuple(a.shape) for a in args]} (pass dynamic_batch=False)"
        )
    return int(next(iter(sizes)))


def _resize_batch(args: tuple[torch.Tensor, ...], batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The inputs at another batch size: rows repeated, the added rows of float inputs perturbed."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for a in args:
        reps = -(-batch // a.shape[0])
        b = a.repeat(reps, *([1] * (a.dim() - 1)))[:batch].clone()
        if b.is_floating_point() and batch > a.shape[0]:
            extra = b[a.shape[0]:]
            noise = torch.randn(extra.shape, generator=gen).to(b)
            extra.add_(noise * (a.float().std().item() if a.numel() > 1 else 1.0) * 0.5)
        out.append(b)
    return tuple(out)


def _compare(reference: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    """Largest absolute difference; ``inf`` when the outputs' number or shapes differ."""
    if len(reference) != len(got) or any(tuple(r.shape) != tuple(g.shape) for r, g in zip(reference, got)):
        return math.inf
    return max(((r.detach().cpu().double() - g.detach().cpu().double()).abs().max().item()
                for r, g in zip(reference, got) if r.numel()), default=0.0)


def _short(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}{' ...' if len(text) > limit else ''}"


def _onnx_modules() -> None:
    """Import what ``torch.onnx.export`` needs, or name the extra that installs it."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f"ONNX export needs the package(s) {', '.join(missing)}, which are not installed: {_ONNX_EXTRA}"
        )


def _dynamic_shapes(args: tuple[torch.Tensor, ...], dynamic_batch: bool) -> tuple[dict[int, Any], ...] | None:
    if not dynamic_batch:
        return None
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in args)


def _write_onnx_torchscript(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path,
                            dynamic_batch: bool) -> None:
    """ONNX through torch's TorchScript-based exporter (``dynamo=False``), the batch dimension dynamic."""
    with torch.no_grad():
        n_out = len(_flat(model(*args)))
    inputs, outputs = [f"input_{i}" for i in range(len(args))], [f"output_{i}" for i in range(n_out)]
    axes = {n: {0: "batch"} for n in inputs + outputs} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings; the check decides
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes)


def _write(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, fmt: str, dynamic_batch: bool) -> str:
    """Run the exporter; the file lands at ``path``. Returns the exporter that wrote it (for ONNX: ``"dynamo"``,
    or ``"torchscript"`` where the ``torch.export``-based exporter failed and the TorchScript-based one did not)."""
    if fmt == "torch_export":
        program = torch.export.export(model, args, dynamic_shapes=_dynamic_shapes(args, dynamic_batch))
        torch.export.save(program, path)
        return "torch.export"
    elif fmt == "onnx":
        nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
        try:
            program = torch.onnx.export(
                model, args, dynamo=True, dynamic_shapes=_dynamic_shapes(args, dynamic_batch), verbose=False,
            )
            if program is None:
                raise ExportError("torch.onnx.export returned no program")
            program.save(path, external_data=nbytes > _ONNX_INLINE_BYTES)
            return "dynamo"
        except Exception as exc:  # noqa: BLE001 - some models only convert with the TorchScript-based exporter
            if nbytes > _ONNX_INLINE_BYTES:
                raise
            try:
                _write_onnx_torchscript(model, args, path, dynamic_batch)
            except Exception as legacy:  # noqa: BLE001 - both exporters failed: report both causes
                raise ExportError(f"torch.onnx.export failed: {_short(exc, 300)}; the TorchScript-based exporter "
                                  f"(dynamo=False) too: {_short(legacy, 300)}") from exc
            return "torchscript"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the check tells whether the trace generalises
            traced = torch.jit.trace(model, args, check_trace=False)
            torch.jit.save(traced, str(path))
        return "torch.jit.trace"


def _load_file(path: Path, fmt: str, device: torch.device) -> Callable[..., list[torch.Tensor]] | None:
    """Reload the exported file as a function of the positional inputs returning the flat outputs.

    ``None`` for ONNX when onnxruntime is not installed (the file is then only checked by ``onnx.checker``).
    """
    if fmt == "torch_export":
        module = torch.export.load(path).module()
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device)
    else:
        try:
            import onnxruntime
        except ImportError:
            import onnx

            onnx.checker.check_model(str(path))
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run_onnx(*args: torch.Tensor) -> list[torch.Tensor]:
            if len(names) != len(args):
                raise ExportError(f"the ONNX graph takes {len(names)} inputs ({names}), the module {len(args)}")
            outs = session.run(None, {n: a.detach().cpu().numpy() for n, a in zip(names, args)})
            return [torch.from_numpy(o) for o in outs]

        return run_onnx

    def run_module(*args: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return _flat(module(*args))

    return run_module


def _reference(model: nn.Module, args: tuple[torch.Tensor, ...], name: str, other_batch: bool) -> list[torch.Tensor]:
    """The module's outputs (flat) on ``args``, or an `ExportError` saying which inputs it refuses."""
    try:
        with torch.no_grad():
            return _flat(model(*args))
    except Exception as exc:  # noqa: BLE001 - the module itself does not run on these inputs
        what = (f"at batch size {args[0].shape[0]}, so its batch dimension cannot be dynamic: pass "
                "dynamic_batch=False" if other_batch else "on the example inputs")
        raise ExportError(f"{name} itself fails {what} ({_short(exc, 300)})") from exc


def _check_file(
    path: Path,
    result: ExportResult,
    name: str,
    check_sets: list[tuple[torch.Tensor, ...]],
    references: list[list[torch.Tensor]],
    atol: float,
) -> None:
    """Run the written file on every input set and compare with the module's outputs; fills ``result``.

    Raises:
        ExportError: the file does not load or run, or its outputs differ by more than the tolerance.
    """
    fmt = result.format
    try:
        exported = _load_file(path, fmt, check_sets[0][0].device)
    except Exception as exc:  # noqa: BLE001 - the written file does not load
        raise ExportError(f"the exported {fmt} file of {name} does not load: {_short(exc)}") from exc
    if exported is None:
        warnings.warn(f"onnxruntime is not installed: {result.path.name} was checked with onnx.checker only, "
                      f"not run ({_ONNX_EXTRA})", RuntimeWarning, stacklevel=3)
        return
    diffs, scale = [], 0.0
    for args, ref in zip(check_sets, references):
        try:
            got = exported(*args)
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - the file does not run on these inputs
            raise ExportError(f"the exported {fmt} file of {name} fails on inputs of shape "
                              f"{[tuple(t.shape) for t in args]}: {_short(exc)}") from exc
        diffs.append(_compare(ref, got))
        scale = max([scale] + [r.detach().abs().max().item() for r in ref if r.numel()])
    result.checked = True
    result.batch_sizes = tuple(int(a[0].shape[0]) for a in check_sets)
    result.max_diff, result.output_scale = max(diffs), scale
    if not result.max_diff <= atol * max(1.0, scale):
        raise ExportError(
            f"the exported {fmt} file of {name} computes other outputs than the module: largest difference "
            f"{result.max_diff:.3g} (outputs up to {scale:.3g}, batch sizes {list(result.batch_sizes)}), allowed "
            f"{atol:g} x max(1, scale); nothing was written"
        )


def export_model(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike[str],
    format: str = "torch_export",
    *,
    dynamic_batch: bool = True,
    check: bool = True,
    atol: float = 1e-5,
) -> ExportResult:
    """Export ``model`` (in eval mode) to ``path`` and check the written file against the module.

    Args:
        model: a plain module, e.g. a pruned model after `WidthPruner.finalize`. Its train/eval mode,
            ``requires_grad`` flags and parameters are the same afterwards.
        example_inputs: a tensor or a tuple of tensors (positional inputs) to trace with.
        path: the file to write (usual suffixes: `SUFFIXES`). It is written only once the export (and
            the check) succeeded; an existing file is replaced then.
        format: ``"torch_export"`` (``torch.export.save``), ``"onnx"`` (``torch.onnx.export``, the
            ``torch.export``-based exporter; needs the ``export`` extra) or ``"torchscript"``
            (``torch.jit.trace``).
        dynamic_batch: export the first dimension of every input as a dynamic batch size (TorchScript
            traces have no dimension declarations: the check tells whether another batch size works).
        check: reload the file (``torch.export.load``, onnxruntime, ``torch.jit.load``) and compare its
            outputs to the module's on ``example_inputs`` and, with ``dynamic_batch``, on another batch
            size. ONNX files are checked with onnxruntime when it is installed (otherwise only
            ``onnx.checker`` runs and ``checked`` is ``False``).
        atol: largest allowed difference, ``atol * max(1, largest |output|)``: absolute for outputs of
            magnitude up to 1, relative above (the convention of `rartsprune.apply_surgery`).

    Returns:
        An `ExportResult` with the measured difference.

    Raises:
        ExportError: scores are still attached (finalize or remove them first), the exporter failed (its
            error is named), or the reloaded file computes other outputs. Nothing is written.
        ImportError: ONNX export without the ``export`` extra.
        ValueError, TypeError: an unknown format or malformed inputs.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        >>> r = export_model(net, torch.randn(2, 3, 8, 8), "net.pt2")  # doctest: +SKIP
        >>> r.checked, r.batch_sizes, r.max_diff <= 1e-5  # doctest: +SKIP
        (True, (2, 3), True)
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    if not isinstance(atol, (int, float)) or isinstance(atol, bool) or not math.isfinite(atol) or atol < 0:
        raise ValueError(f"atol must be a non-negative number, got {atol!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    name = type(model).__name__
    if has_scores(model):
        raise ExportError(
            f"{name} still has rartsprune scores attached: export the finished model, after pruner.finalize() "
            "(or rartsprune.apply_surgery), or fold the scores into the weights with rartsprune.remove(model)"
        )
    if format == "onnx":
        _onnx_modules()
    args = _as_args(model, example_inputs)
    batch = _batch_of(args) if dynamic_batch else None
    # torch.export specialises a dimension of size 1: trace a dynamic batch with at least 2 rows
    trace_args = _resize_batch(args, 2) if batch == 1 and format != "torchscript" else args
    check_sets = [args]
    if dynamic_batch and batch is not None:
        check_sets.append(_resize_batch(args, max(batch, trace_args[0].shape[0]) + 1, seed=1))
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"the folder of {os.fspath(path)!r} does not exist")
    with preserved_state(model):
        model.eval()
        references = [_reference(model, a, name, i > 0) for i, a in enumerate(check_sets)] if check else []
        tmp_dir = Path(tempfile.mkdtemp(prefix=".rartsprune-export-", dir=target.parent))
        try:
            # ONNX names its external data file after the model file; torch.export wants a .pt2 name
            tmp = tmp_dir / (target.name if format == "onnx" else "model" + SUFFIXES[format])
            try:
                exporter = _write(model, trace_args, tmp, format, dynamic_batch)
            except ExportError:
                raise
            except Exception as exc:  # noqa: BLE001 - any exporter failure, reported with its cause
                dims = ("Constraints violated", "specializ", "Dim(", "batch")
                hint = (" (the dynamic batch dimension is the cause: try dynamic_batch=False)"
                        if dynamic_batch and any(d in str(exc) for d in dims) else "")
                raise ExportError(f"exporting {name} to {format} failed: {_short(exc)}{hint}") from exc
            result = ExportResult(target, format, dynamic_batch, checked=False, exporter=exporter)
            if check:
                _check_file(tmp, result, name, check_sets, references, atol)
            os.replace(tmp, target)
            for produced in tmp_dir.iterdir():  # PATH.data of an ONNX model over 2 GiB
                os.replace(produced, target.parent / produced.name)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    result.seconds = time.perf_counter() - t0
    return result


def read_plan(plan: PruningPlan | str | os.PathLike[str]) -> PruningPlan:
    """``plan`` itself, or the `PruningPlan` read from that JSON file (``ValueError`` naming the file if it is not one).

    Examples:
        >>> read_plan("no-such-plan.json")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: no-such-plan.json is not a rartsprune pruning plan: ...
    """
    if isinstance(plan, PruningPlan):
        return plan
    try:
        return PruningPlan.load(plan)
    except (ValueError, KeyError, TypeError, OSError) as exc:  # bad JSON and bad UTF-8 are ValueErrors
        raise ValueError(f"{os.fspath(plan)} is not a rartsprune pruning plan: {_short(exc, 200)}") from exc


def load_pruned(
    plan: PruningPlan | str | os.PathLike[str],
    weights: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    example_inputs: Any,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild a pruned model from its plan and weights (a job's ``plan.json`` + ``pruned.pt``).

    Args:
        plan: a `PruningPlan` or the path of its JSON.
        weights: the pruned model's ``state_dict`` or the path of the file holding it.
        model: a fresh, unpruned model of the architecture the plan was made for (from a model spec:
            `rartsprune.app.zoo.load_pruned_spec`).
        example_inputs: inputs for one forward pass (to trace the channel dependencies).
        map_location: where the weights are loaded.

    Returns:
        The pruned model with the weights loaded, in the train/eval mode it was built with.

    Raises:
        ValueError: the plan or the weights do not match the model.
        SurgeryError: the plan cannot be re-applied (see `rartsprune.apply_plan`).

    Examples:
        >>> model = load_pruned("runs/r18/plan.json", "runs/r18/pruned.pt", torchvision.models.resnet18(),
        ...                     example_inputs=torch.randn(1, 3, 224, 224))  # doctest: +SKIP
        >>> export_model(model.eval(), torch.randn(1, 3, 224, 224), "r18.onnx", "onnx")  # doctest: +SKIP
    """
    plan = read_plan(plan)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (for a model spec use rartsprune.app.zoo.load_pruned_spec), got {type(model).__name__}")
    if example_inputs is None:
        raise ValueError("example_inputs is required (a batch the model accepts)")
    apply_plan(model, plan, example_inputs)
    if isinstance(weights, Mapping):
        state = weights
    else:
        try:
            state = torch.load(weights, map_location=map_location, weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"cannot read the weights {os.fspath(weights)!r}: {_short(exc, 300)}") from exc
        if not isinstance(state, Mapping):
            raise ValueError(f"{os.fspath(weights)!r} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the weights do not fit the pruned {type(model).__name__}: {_short(exc, 400)}") from exc
    return model
