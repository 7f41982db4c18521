"""The two layers: the core (`rartsprune` minus `rartsprune.app`) never imports the app, and ``import rartsprune``
loads neither the app, its data package, nor matplotlib."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import rartsprune

PACKAGE = Path(rartsprune.__file__).resolve().parent
#: The one core file allowed to reach the app: ``python -m rartsprune`` runs the app's command line.
ENTRY_POINTS = {"__main__.py"}


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth of the file."""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]  # the file's package
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _core_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "app" not in p.relative_to(PACKAGE).parts[:1]]


def test_the_resolver_sees_relative_imports_of_the_app() -> None:
    # the checker itself: a relative import of the app from a core module and from a subpackage is caught
    app = PACKAGE / "app" / "pipeline.py"
    assert "rartsprune.width" in _imported_modules(app)  # ``from ..width import ...`` inside the app
    assert any(n.startswith("rartsprune.app.") for n in _imported_modules(PACKAGE / "__main__.py"))


def test_no_core_module_imports_the_app() -> None:
    core = _core_files()
    assert len(core) > 30 and PACKAGE / "width" / "pruner.py" in core and PACKAGE / "split.py" in core
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(n for n in _imported_modules(p) if n == "rartsprune.app" or n.startswith("rartsprune.app."))
        for p in core
        if p.name not in ENTRY_POINTS or p.parent != PACKAGE
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"core modules import the app: {offenders}"


def test_import_rartsprune_loads_no_app_data_or_matplotlib() -> None:
    code = (
        "import json, sys; import rartsprune, rartsprune.width, rartsprune.topology, rartsprune.export; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('rartsprune', 'matplotlib'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert "rartsprune.split" in loaded and "rartsprune.width.pruner" in loaded
    bad = [m for m in loaded if m.startswith(("rartsprune.app", "rartsprune.data", "matplotlib"))]
    assert not bad, f"import rartsprune loaded {bad}"


def test_torch_pruning_is_patched_only_inside_rartsprune_calls() -> None:
    # no monkey-patching at import time: Torch-Pruning's index mappings are its own after `import rartsprune`,
    # and after a graph build of a channel-shuffle network (the case the workaround exists for)
    code = (
        "import torch_pruning as tp, torch, torchvision; m = tp.dependency.index_mapping; "
        "names = ('update_reshape_index_mapping', 'update_concat_index_mapping', 'update_split_index_mapping'); "
        "before = [getattr(m, n) for n in names]; import rartsprune; "
        "assert [getattr(m, n) for n in names] == before, 'patched at import'; "
        "model = torchvision.models.shufflenet_v2_x0_5(num_classes=10); "
        "h = rartsprune.attach_scores(model, torch.randn(2, 3, 32, 32)); "
        "assert [getattr(m, n) for n in names] == before, 'left patched'; "
        "print(len(h.groups))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 5  # ShuffleNet's groups were found despite the channel shuffle
