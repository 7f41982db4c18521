"""The networks of the width benchmarks, named on the command line: ``--model preresnet20`` (the default; ``--depth N``
is short for ``--model preresnetN``), ``--model vgg11x0.5`` (VGG-11 at half width) or ``--model mobilenetv2x0.5``
(torchvision's MobileNetV2 at half width with CIFAR strides, `rartsprune.app.models.mobilenet_v2_cifar`).

A model's ``tag`` names its folders under ``--work``: ``d20`` for PreResNet-20, as before this option existed, so
cached runs stay valid; the ``--model`` text otherwise (``vgg11x0.5``, ``mobilenetv2x0.5``).

Examples:
    >>> m = parse_model("vgg11x0.5")
    >>> m.tag, m.title
    ('vgg11x0.5', 'VGG-11 (width 0.5)')
    >>> parse_model("preresnet20").tag
    'd20'
    >>> parse_model("mobilenetv2x0.5").title
    'MobileNetV2 (width 0.5)'
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import torch.nn as nn

from rartsprune.app.models import VGG_CONFIGS, mobilenet_v2_cifar, preresnet, vgg


@dataclass(frozen=True)
class BudgetKind:
    """What a budget is a fraction of (``--budget-kind``): ``letter`` marks its run folders (``_m0.6`` / ``_p0.6``),
    ``text`` names it in tables and plots."""

    letter: str
    text: str


#: ``--budget-kind`` of `bench/equal_macs.py` and `bench/heldout_eval.py`: `PruneJob.macs` or `PruneJob.params`.
BUDGET_KINDS = {"macs": BudgetKind("m", "MACs"), "params": BudgetKind("p", "params")}

_WIDTH = r"(?:x(?P<{}>[0-9]*\.?[0-9]+))?"
_NAME = re.compile(rf"^(?:preresnet(?P<depth>\d+)|vgg(?P<vgg>\d+){_WIDTH.format('width')}|mobilenetv2{_WIDTH.format('mw')})$")


#: Per ``BenchModel.arch``: its ``--model`` text and its title in results (``str.format`` with depth and width).
_ARCHS = {"preresnet": ("preresnet{depth}", "PreResNet-{depth}"),
          "vgg": ("vgg{depth}x{width:g}", "VGG-{depth} (width {width:g})"),
          "mobilenetv2": ("mobilenetv2x{width:g}", "MobileNetV2 (width {width:g})")}


@dataclass(frozen=True)
class BenchModel:
    """One benchmark network: ``arch`` ``"preresnet"``, ``"vgg"`` or ``"mobilenetv2"``, its ``depth`` (PreResNet, VGG;
    0 for MobileNetV2) and (VGG, MobileNetV2) ``width``."""

    arch: str
    depth: int
    width: float = 1.0

    @property
    def name(self) -> str:
        """The ``--model`` text (also the job's ``model`` field)."""
        return _ARCHS[self.arch][0].format(depth=self.depth, width=self.width)

    @property
    def tag(self) -> str:
        """The folder name part under ``--work``."""
        return f"d{self.depth}" if self.arch == "preresnet" else self.name

    @property
    def title(self) -> str:
        """The name in result titles."""
        return _ARCHS[self.arch][1].format(depth=self.depth, width=self.width)

    def build(self, num_classes: int = 10) -> nn.Module:
        """A new, randomly initialised network (the jobs' ``model_factory``)."""
        if self.arch == "preresnet":
            return preresnet(depth=self.depth, num_classes=num_classes)
        if self.arch == "vgg":
            return vgg(depth=self.depth, num_classes=num_classes, width=self.width)
        return mobilenet_v2_cifar(num_classes=num_classes, width=self.width)


def parse_model(text: str) -> BenchModel:
    """``--model``'s text as a `BenchModel`; ValueError naming the accepted forms (and building nothing) else."""
    m = _NAME.match(text)
    if m is None:
        raise ValueError(f"unknown model {text!r}: use preresnet<depth> (e.g. preresnet20), vgg<depth>[x<width>] "
                         "(e.g. vgg11x0.5) or mobilenetv2[x<width>] (e.g. mobilenetv2x0.5)")
    if m["depth"] is not None:
        model = BenchModel("preresnet", int(m["depth"]))
    elif text.startswith("mobilenetv2"):
        model = BenchModel("mobilenetv2", 0, float(m["mw"]) if m["mw"] else 1.0)
    else:
        model = BenchModel("vgg", int(m["vgg"]), float(m["width"]) if m["width"] else 1.0)
        if model.depth not in VGG_CONFIGS or model.width <= 0:
            raise ValueError(f"model {text!r}: VGG depth must be one of {sorted(VGG_CONFIGS)} and width positive")
    model.build()  # an invalid PreResNet depth or width fails here, with the model's own message
    return model


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """``--model`` and its shorthand ``--depth``."""
    ap.add_argument("--model", default=None,
                    help="the network: preresnet<depth> (default preresnet20), vgg<depth>[x<width>] (e.g. vgg11x0.5) or "
                         "mobilenetv2[x<width>] (e.g. mobilenetv2x0.5)")
    ap.add_argument("--depth", type=int, default=None, help="short for --model preresnet<depth>")


def model_of(args: argparse.Namespace) -> BenchModel:
    """The parsed ``--model`` / ``--depth`` (SystemExit with the reason when they are wrong or both given)."""
    if args.model is not None and args.depth is not None:
        raise SystemExit("give --model or --depth, not both")
    try:
        return parse_model(args.model or f"preresnet{args.depth or 20}")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
