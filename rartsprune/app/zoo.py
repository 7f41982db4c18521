"""Build models from a spec string: ``torchvision:NAME``, ``timm:NAME``, ``timm_features:NAME`` or ``file.py:FUNCTION``.

Used by the command line (``--model``), the coverage benchmark and the tests. ``torchvision:NAME`` covers
torchvision's classifiers and its detection, segmentation, video and optical-flow models;
``timm_features:NAME`` is a timm backbone built with ``features_only=True``. The task models' sizes and
example batches are in `rartsprune.app.tasks`.

Examples:
    >>> from rartsprune.app.zoo import build_model, example_inputs_for
    >>> model = build_model("torchvision:resnet18", num_classes=10, small=True)
    >>> example_inputs_for("torchvision:resnet18").shape
    torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..export import load_pruned, read_plan
from ..surgery import PruningPlan, layer_widths
from .tasks import small_build_kwargs, takes_num_classes, task_inputs, task_of

__all__ = [
    "load_pruned_spec",
    "build_model",
    "example_inputs_for",
    "input_size_for",
    "TIMM_COVERAGE",
    "torchvision_classification_models",
]

#: timm models of the coverage table (>= 15 families; small variants so the sweep fits a CPU).
TIMM_COVERAGE: tuple[str, ...] = (
    "resnet18", "resnet50d", "resnet26t", "seresnet18", "resnext26ts", "seresnext26d_32x4d", "skresnet18",
    "res2net50_14w_8s", "resnest14d", "resnetv2_50", "tresnet_m", "regnetx_002", "regnety_002", "regnetz_005",
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnetv2_b0", "tinynet_a", "mixnet_s", "mnasnet_050",
    "semnasnet_050", "fbnetc_100", "spnasnet_100", "hardcorenas_a", "mobilenetv2_050", "mobilenetv2_100",
    "mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv4_conv_small", "lcnet_050", "rexnet_100",
    "ghostnet_050", "ghostnetv2_100", "repghostnet_050", "convnext_atto", "convnext_nano", "convnextv2_atto",
    "densenet121", "xception41", "legacy_xception", "dla34", "dla46_c", "dpn48b", "dpn68", "hrnet_w18_small",
    "cspresnet50", "cspdarknet53", "darknet17", "repvgg_a0", "mobileone_s0", "selecsls42b", "ese_vovnet19b_dw",
    "gernet_s", "hgnet_tiny", "vgg11", "inception_v3", "nf_resnet26", "dm_nfnet_f0", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "beit_base_patch16_224", "eva02_tiny_patch14_224", "cait_xxs24_224",
    "xcit_nano_12_p16_224", "pit_ti_224", "tnt_s_patch16_224", "crossvit_tiny_240", "mixer_s32_224",
    "resmlp_12_224", "swin_tiny_patch4_window7_224", "twins_svt_small", "pvt_v2_b0", "coat_lite_tiny",
    "levit_128s", "mobilevit_xxs", "edgenext_xx_small", "efficientformer_l1", "poolformer_s12",
    "fastvit_t8", "efficientvit_b0", "botnet26t_256", "halonet26t", "volo_d1_224", "maxvit_nano_rw_256",
    "coatnet_nano_rw_224", "bat_resnext26ts", "sebotnet33ts_256", "inception_next_tiny", "rdnet_tiny",
    "starnet_s1", "tiny_vit_5m_224", "nextvit_small", "gcvit_xxtiny", "davit_tiny", "focalnet_tiny_srf",
)

#: torchvision models whose input size must differ from the small default.
#: Inception-v3's auxiliary head (run in training mode) needs its full 299 px input.
_TV_INPUT = {"inception_v3": 299, "maxvit_t": 224, "googlenet": 64, "vit_h_14": 56}  # ViT-H: 14 px patches
#: torchvision constructors that accept a smaller ``image_size``.
_TV_IMAGE_SIZE = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")
_SMALL = 64


def torchvision_classification_models() -> list[str]:
    """Names returned by ``torchvision.models.list_models(module=torchvision.models)``."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _split(spec: str) -> tuple[str, str]:
    if ":" not in spec:
        raise ValueError(
            f"model spec {spec!r} must look like 'torchvision:resnet18', 'timm:efficientnet_b0', "
            "'timm_features:resnet18' or 'path/to/file.py:fn'"
        )
    kind, name = spec.rsplit(":", 1)
    if not kind or not name:
        raise ValueError(f"model spec {spec!r} is missing its source or its name")
    return kind, name


def _load_factory(path: str, fn: str) -> Callable[..., nn.Module]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model factory file {path!r} does not exist")
    mod_name = f"_rartsprune_factory_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path!r} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    factory = getattr(module, fn, None)
    if not callable(factory):
        raise ValueError(f"{path!r} has no callable named {fn!r}")
    return factory


def input_size_for(spec: str, small: bool = True) -> int:
    """Side of the square test image for ``spec``: small (64 px) where the architecture allows when ``small``.

    Matches `build_model` called with the same ``small``.
    """
    kind, name = _split(spec)
    if kind == "torchvision":
        if not small:
            return 299 if name == "inception_v3" else 224
        return _TV_INPUT.get(name, _SMALL)
    if kind in ("timm", "timm_features"):
        import timm

        cfg = timm.get_pretrained_cfg(name)
        default = int((cfg.input_size if cfg is not None else (3, 224, 224))[-1])
        return _SMALL if small and _timm_accepts_img_size(name) else default
    return _SMALL if small else 224


def _timm_accepts_img_size(name: str) -> bool:
    """True when timm builds ``name`` for 64 px inputs and a 64 px forward works (checked on the meta device)."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False, img_size=_SMALL, num_classes=10).eval()
            with torch.no_grad():
                model(torch.empty(1, 3, _SMALL, _SMALL))
    except Exception:  # noqa: BLE001 - any failure means: build it at its default size
        return False
    return True


def _download_guard(spec: str, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()``, with a failed weight download turned into one clear error instead of a urllib traceback."""
    try:
        return build()
    except OSError as exc:  # urllib's URLError and socket errors are OSErrors
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise RuntimeError(
            f"{spec}: downloading its weights failed ({type(exc).__name__}: {exc}); this machine cannot reach the "
            "weights server. Build it without pretrained weights, or put the file in torch's hub cache "
            "(TORCH_HOME) first"
        ) from exc


def build_model(
    spec: str, num_classes: int = 1000, *, pretrained: bool = False, small: bool = False, **kwargs: Any
) -> nn.Module:
    """Build a model from ``torchvision:NAME``, ``timm:NAME``, ``timm_features:NAME`` or ``path/to/file.py:FUNCTION``.

    Args:
        spec: the model spec.
        num_classes: classifier outputs (passed as ``num_classes`` to the constructor or factory; not to the
            models without one: RAFT and timm feature extractors).
        pretrained: load the library's pretrained weights (torchvision/timm download them).
        small: build transformers for 64 px inputs where the constructor allows, and task models cheap to
            check (`rartsprune.app.tasks.small_build_kwargs`: small detector inputs, fewer proposals, ...).
        **kwargs: passed to the constructor.

    Raises:
        ValueError: malformed spec or unknown model name.
    """
    kind, name = _split(spec)
    if kind == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise ValueError(f"torchvision has no model named {name!r}")
        if pretrained:
            if num_classes != 1000:
                raise ValueError("pretrained torchvision models come with 1000 classes; replace the head yourself")
            kwargs.setdefault("weights", "DEFAULT")
            return _download_guard(spec, lambda: torchvision.models.get_model(name, **kwargs))
        if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
            # detection / segmentation builders download ImageNet backbone weights unless told not to
            kwargs.setdefault("weights_backbone", None)
        if name in _TV_IMAGE_SIZE and "image_size" not in kwargs and small:
            kwargs["image_size"] = _TV_INPUT.get(name, _SMALL)
        if small:
            kwargs = {**small_build_kwargs(spec), **kwargs}
        if takes_num_classes(spec):
            kwargs["num_classes"] = num_classes
        return _download_guard(spec, lambda: torchvision.models.get_model(name, **kwargs))
    if kind in ("timm", "timm_features"):
        import timm

        if name not in timm.list_models(pretrained=False) and name not in timm.list_models(pretrained=True):
            raise ValueError(f"timm has no model named {name!r}")
        if small and "img_size" not in kwargs and _timm_accepts_img_size(name):
            kwargs["img_size"] = _SMALL
        if kind == "timm_features":
            return timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    if kind.endswith(".py"):
        model = _load_factory(kind, name)(num_classes=num_classes, **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"{spec} returned {type(model).__name__}, not an nn.Module")
        return model
    raise ValueError(f"unknown model source {kind!r} in {spec!r} (use torchvision:, timm:, timm_features: or a .py file)")


def example_inputs_for(spec: str, batch: int = 1, small: bool = True, model: nn.Module | None = None) -> Any:
    """A random image batch for ``spec``; for detection, segmentation, video and flow models their task's inputs.

    Without ``model``: the size `input_size_for` picks. With ``model``: the smallest of 64 px (when
    ``small``) and the architecture's default size that the model actually accepts (one forward pass each
    in eval mode; the model's modes are restored). Task models (`rartsprune.app.tasks.task_of`) get
    `rartsprune.app.tasks.task_inputs`' ``example``: ``(images,)`` (a list of images) for detectors, a clip batch
    (B, 3, T, H, W) for video models, ``(image1, image2, num_flow_updates)`` for RAFT.
    """
    task = task_of(spec)
    if task in ("detection", "segmentation", "video", "flow"):
        return task_inputs(spec, model if task == "detection" else None, batch, small=small).example
    sizes = [input_size_for(spec, small)]
    if model is not None:
        sizes = sorted({_SMALL, input_size_for(spec, small), input_size_for(spec, small=False)}) if small else sizes
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            for size in sizes:
                x = torch.randn(batch, 3, size, size)
                try:
                    with torch.no_grad():
                        model(x[:1])
                    return x
                except (RuntimeError, ValueError, AssertionError, IndexError):
                    continue
        finally:
            for m, mode in modes:
                m.training = mode
    size = sizes[-1]
    return torch.randn(batch, 3, size, size)


_PROBE_CLASSES = 997  # a class count no real head has, to find the classifier layers in a plan


def _infer_num_classes(spec: str, plan: PruningPlan, **kwargs: Any) -> int | None:
    """The classifier width of the plan: build ``spec`` (on the meta device) with a probe class count."""
    if not takes_num_classes(spec):
        return None
    try:
        with torch.device("meta"):
            probe = build_model(spec, num_classes=_PROBE_CLASSES, **kwargs)
    except Exception:  # noqa: BLE001 - some constructors do not build on the meta device
        probe = build_model(spec, num_classes=_PROBE_CLASSES, **kwargs)
    heads = [n for n, w in layer_widths(probe).items() if w.get("out") == _PROBE_CLASSES]
    found = {int(plan.widths[n]["out"]) for n in heads if "out" in plan.widths.get(n, {})}
    if len(found) > 1:
        raise ValueError(f"the plan's classifier layers {heads} disagree on the number of classes: {sorted(found)}")
    return found.pop() if found else None


def load_pruned_spec(
    plan: PruningPlan | str | os.PathLike[str],
    weights: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    spec: str,
    *,
    example_inputs: Any = None,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
    **model_kwargs: Any,
) -> nn.Module:
    """`rartsprune.export.load_pruned` for a model spec (``torchvision:NAME``, ``timm:NAME``, ``file.py:FUNCTION``).

    Args:
        plan, weights, map_location: as in `rartsprune.export.load_pruned`.
        spec: the unpruned architecture's spec, as in `build_model`.
        example_inputs: default: one image at the architecture's default size (`input_size_for`); for task
            models their example inputs (`rartsprune.app.tasks.task_inputs`, e.g. ``(images,)``).
        num_classes: classes of the model; default: read from the plan (the classifier's width), else 1000.
        **model_kwargs: passed to `build_model`.

    Examples:
        >>> model = load_pruned_spec("runs/r18/plan.json", "runs/r18/pruned.pt", "torchvision:resnet18")  # doctest: +SKIP
    """
    plan = read_plan(plan)
    planned = _infer_num_classes(spec, plan, **model_kwargs)
    if num_classes is None:
        num_classes = planned or 1000
    elif planned is not None and planned != num_classes:
        raise ValueError(f"num_classes={num_classes}, but the plan's classifier has {planned} outputs")
    model = build_model(spec, num_classes=num_classes, **model_kwargs)
    if example_inputs is None and task_of(spec) in ("detection", "segmentation", "video", "flow"):
        example_inputs = task_inputs(spec, model, 2, small=bool(model_kwargs.get("small", False))).example
    elif example_inputs is None:
        size = input_size_for(spec, small=False)
        example_inputs = torch.randn(1, 3, size, size)
    return load_pruned(plan, weights, model, example_inputs=example_inputs, map_location=map_location)
