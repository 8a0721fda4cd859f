"""The shape of the code, checked: imports go one way, and the registries reach everything that
lists targets (so a new target is its module plus one registry line)."""

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# edgemnv2's layers, low to high. Modules not named in UPPER are the core: models, data, tasks,
# checkpoint, evaluation math, the artifacts layer (manifests, verification, Runner) and below.
# conversion and quantization sit above the core; UPPER sits above them.
UPPER = ("edgemnv2.diagnosis", "edgemnv2.validation.validate", "edgemnv2.validation.report", "edgemnv2.validation.junit", "edgemnv2.bundle", "edgemnv2.prediction", "edgemnv2.services",
         "edgemnv2.api", "edgemnv2.cli", "edgemnv2.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import in the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module
                found.append((target, inner))
                found.extend((f"{target}.{alias.name}", inner) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def _modules(package: str) -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted((REPO / package).rglob("*.py"))}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_core_never_reaches_up():
    offenders = []
    for module, imports in _modules("edgemnv2").items():
        if _under(module, UPPER):
            continue
        offenders += [f"{module} imports {target}" for target, _ in imports if _under(target, ("conversion", "quantization") + UPPER)]
    assert not offenders, offenders


def test_quantization_and_conversion_never_import_the_layers_above_them():
    offenders = []
    for package, forbidden in (("quantization", ("conversion",) + UPPER), ("conversion", UPPER)):
        for module, imports in _modules(package).items():
            offenders += [f"{module} imports {target}" for target, _ in imports if _under(target, forbidden)]
    assert not offenders, offenders


def test_no_import_of_conversion_is_hidden_inside_a_function():
    """A function-local import hid the old edgemnv2 <-> conversion cycle; upper layers import it openly."""
    hidden = [f"{module}: {target}" for module, imports in _modules("edgemnv2").items() for target, nested in imports
              if nested and _under(target, ("conversion",))]
    assert not hidden, hidden


def test_benchmarks_use_library_services_not_the_cli():
    offenders = [f"{module} imports {target}" for module, imports in _modules("benchmarks").items() for target, _ in imports if _under(target, ("edgemnv2.cli",))]
    assert not offenders, offenders


def test_every_target_is_reached_by_the_device_runner_the_cli_and_the_manifests(capsys):
    from conversion import TARGETS
    from edgemnv2.cli.main import run
    from edgemnv2.device import run_bundle

    assert run(["convert", "--help"]) == 0
    help_text = capsys.readouterr().out
    for name, target in TARGETS.items():
        assert target.spec.device_runtime in run_bundle.RUNTIMES, f"{name}: no '{target.spec.device_runtime}' runtime in the device runner"
        assert name in help_text, f"{name} is missing from `convert --help`"
        assert target.spec.runtime_modules and target.spec.tool_packages is not None
        assert set(target.spec.precisions) <= {"fp32", "fp16", "int8", "int8_weights"}
        for module in target.spec.runtime_modules:
            assert isinstance(module, str) and module.isidentifier()


@pytest.mark.parametrize("name", ["onnx"])
def test_the_fifth_target_is_one_module_and_one_registry_line(name):
    """ONNX was added as conversion/onnx.py, its line in conversion/__init__.py and its runtime
    family in the device runner: nothing else names it."""
    mentions = []
    for path in list((REPO / "edgemnv2").rglob("*.py")) + list((REPO / "conversion").rglob("*.py")) + list((REPO / "benchmarks").rglob("*.py")):
        if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text():
            mentions.append(str(path.relative_to(REPO)))
    assert sorted(mentions) == ["conversion/onnx.py"], mentions
    assert importlib.import_module(f"conversion.{name}").TARGET.name == name
