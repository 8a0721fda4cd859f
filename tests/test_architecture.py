"""The shape of the code, checked: imports go one way, and the registries reach everything that
lists targets (so a new target is its module plus one registry line)."""

import ast
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# edgemnv2's layers, low to high. Modules not named in UPPER are the core: models, data, tasks,
# checkpoint, evaluation math, the artifacts layer (manifests, verification, Runner) and below.
# conversion and quantization sit above the core; UPPER sits above them.
UPPER = ("edgemnv2.diagnosis", "edgemnv2.validation.validate", "edgemnv2.validation.report", "edgemnv2.validation.junit", "edgemnv2.bundle", "edgemnv2.prediction", "edgemnv2.services",
         "edgemnv2.api", "edgemnv2.api_compat", "edgemnv2.cli", "edgemnv2.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_statements(path: Path, name: str) -> list[tuple[str, list[str], bool]]:
    """(module imported from, names imported, inside a function?) for every import in the file of module
    `name`, relative ones resolved; a plain `import a.b` is ("a.b", [], ...)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, [], inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                source = (f"{base}.{child.module}" if child.module else base) if child.level else child.module
                found.append((source, [alias.name for alias in child.names], inner))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import in the file, relative ones resolved; a
    `from module import name` counts as both `module` and `module.name`."""
    found = []
    for source, names, inner in _import_statements(path, _module_name(path)):
        found.append((source, inner))
        found.extend((f"{source}.{name}", inner) for name in names)
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


def test_models_name_their_task_and_do_not_import_tasks():
    """The task registry sits above the models: a model spec names its task, edgemnv2.tasks resolves it."""
    offenders = [f"{module} imports {target}" for module, imports in _modules("edgemnv2/models").items() for target, _ in imports
                 if _under(target, ("edgemnv2.tasks",))]
    assert not offenders, offenders


def test_backbones_are_listed_once_by_the_model_registry():
    """No second backbone table (centernet's BACKBONES was one): a backbone's name appears as a string only
    in the registry, in the product code."""
    from edgemnv2.models import backbone_names

    listed = []
    for path in sorted((REPO / "edgemnv2").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in set(backbone_names()) - {"mobilenet_v2"}:
                listed.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert all(entry.startswith("edgemnv2/models/__init__.py") for entry in listed), listed


def _product_modules() -> dict[str, Path]:
    """Every module of the product, vendored code included (it can be imported, not checked)."""
    return {_module_name(path): path for package in ("edgemnv2", "conversion", "quantization") for path in sorted((REPO / package).rglob("*.py"))}


def _dependencies(module: str, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(product module it imports, inside a function?). `from package import name` depends on the
    submodule when `name` is one, else on the package itself (its __init__ defines the name)."""
    found = []
    for source, names, inner in _import_statements(modules[module], module):
        targets = [f"{source}.{name}" if f"{source}.{name}" in modules else source for name in names] or [source]
        found.extend((target, inner) for target in targets)
    resolved = []
    for target, nested in found:
        while target and target not in modules:
            target = target.rsplit(".", 1)[0] if "." in target else None
        if target and target != module:
            resolved.append((target, nested))
    return resolved


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_products_modules():
    """Computed over every import, at module level or inside a function: a cycle hidden in a function is
    still a cycle (the pipeline and the --max-drop search were one; each target and its per-op module,
    the task registry and training, the two quantization recipes were others)."""
    modules = _product_modules()
    graph = {module: {target for target, _ in _dependencies(module, modules)} for module in modules if "third_party" not in module}
    graph.update({module: set() for module in modules if "third_party" in module})
    assert not _cycles(graph), _cycles(graph)


def test_no_project_module_is_imported_inside_a_function():
    """A project module is imported at the top of the module that uses it, where the layering and the
    cycle test see it. (Third-party packages, the optional runtimes and converters, may be imported where
    they are used; `import edgemnv2` resolves its API lazily through PEP 562, not an import statement.)"""
    modules = _product_modules()
    hidden = [f"{module} imports {target} inside a function" for module in modules if "third_party" not in module
              for target, nested in _dependencies(module, modules) if nested]
    assert not hidden, hidden


def test_the_cycle_rule_catches_what_it_is_for():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_benchmarks_use_library_services_not_the_cli():
    offenders = [f"{module} imports {target}" for module, imports in _modules("benchmarks").items() for target, _ in imports if _under(target, ("edgemnv2.cli",))]
    assert not offenders, offenders


def test_every_target_is_reached_by_the_device_runner_the_cli_and_the_manifests(capsys):
    from conversion import TARGETS
    from edgemnv2.cli.main import run
    from edgemnv2.device import run_bundle
    from edgemnv2.precision import PRECISIONS

    assert run(["convert", "--help"]) == 0
    help_text = capsys.readouterr().out
    for name, target in TARGETS.items():
        assert target.spec.device_runtime in run_bundle.RUNTIMES, f"{name}: no '{target.spec.device_runtime}' runtime in the device runner"
        assert name in help_text, f"{name} is missing from `convert --help`"
        assert target.spec.runtime_modules and target.spec.tool_packages is not None
        assert set(target.spec.precisions) <= set(PRECISIONS)  # each a Precision value, nothing named only by a target
        for module in target.spec.runtime_modules:
            assert isinstance(module, str) and module.isidentifier()


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_the_fifth_target_is_one_module_and_one_registry_line(name):
    """ONNX was added as conversion/onnx.py, its line in conversion/__init__.py and its runtime
    family in the device runner; OpenVINO likewise (its family shares its name, so the runner's
    family table names it): nothing else names them."""
    mentions = []
    for path in list((REPO / "edgemnv2").rglob("*.py")) + list((REPO / "conversion").rglob("*.py")) + list((REPO / "benchmarks").rglob("*.py")):
        if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text():
            mentions.append(str(path.relative_to(REPO)))
    assert set(mentions) <= {f"conversion/{name}.py", "edgemnv2/device/runtime_adapters.py"} and f"conversion/{name}.py" in mentions, mentions
    assert importlib.import_module(f"conversion.{name}").TARGET.name == name


PRODUCT = ("edgemnv2", "conversion", "quantization")


def _product_files() -> list[Path]:
    return [path for package in PRODUCT for path in sorted((REPO / package).rglob("*.py")) if "third_party" not in path.parts]


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string in the code (docstrings and comments name things freely; code that branches does not)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_module_outside_a_targets_own_names_a_target():
    """A target's name is its module's (conversion/<target>.py) and, for its runtime family, the runtime
    adapters' (the device runner's families): anywhere else a target is reached through the registry.
    (`--server-engine` was the last: it is now the torchscript option's declared alias.)"""
    from conversion import TARGETS

    allowed = {f"conversion/{name}.py" for name in TARGETS} | {"edgemnv2/device/runtime_adapters.py"}
    offenders = [f"{path.relative_to(REPO)}:{line}: {value!r}" for path in _product_files() if str(path.relative_to(REPO)) not in allowed
                 for line, value in _string_constants(path) if value in TARGETS]
    assert not offenders, offenders


def _task_comparisons(path: Path, names: set[str], objects: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            named = [o for o in operands if isinstance(o, ast.Constant) and o.value in names]
            identity = [o for o in operands if isinstance(o, ast.Name) and o.id in objects]
            if named or identity:
                found.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_a_task_package_branches_on_its_task():
    """A task's behaviour is asked of its object (edgemnv2/tasks/<task>/): no module elsewhere compares
    against a task's name or its object, and the registry (edgemnv2/tasks/__init__.py) is the one list of tasks."""
    from edgemnv2.tasks import TASKS

    objects = {name.upper() for name in TASKS}
    offenders = [hit for path in _product_files() if not _under(_module_name(path), tuple(f"edgemnv2.tasks.{name}" for name in TASKS))
                 for hit in _task_comparisons(path, set(TASKS), objects)]
    assert not offenders, offenders
    for name in TASKS:
        assert (REPO / "edgemnv2" / "tasks" / name / "__init__.py").is_file(), f"{name} is not a package"
    lists = [f"{module} imports {target}" for module, imports in _modules("edgemnv2").items() for target, _ in imports
             if target.rsplit(".", 1)[-1] in objects and module != "edgemnv2.tasks" and not _under(module, ("edgemnv2.tasks",))]
    assert not lists, lists


def test_the_rules_above_catch_what_they_are_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""tflite docstring"""\nif task.name == "detection" or spec is DETECTION:\n    pick("tflite")\n')
    assert len(_task_comparisons(probe, {"detection"}, {"DETECTION"})) == 2
    assert [value for _, value in _string_constants(probe)] == ["detection", "tflite"]


# A latency, a speed-up or a timing ratio depends on the CPU (these machines are AMD with and without
# VNNI, Intel with AMX), so it belongs in benchmarks/, which print it with the machine line. A test
# may check that a time is reported (> 0, finite) and that the code's rules over times hold, the
# latter marked on the assert's line with "# not a timing assertion: <why>".
TIMING_WORDS = re.compile(r"_ms\b|_ms\W|latency|speed|ratio|faster|slower|seconds|gmacs|over_fp32|over_end_to_end|throughput|elapsed|duration"
                          r"|perf_counter|monotonic|img_s|per_second")
TIMING_PRAGMA = "# not a timing assertion:"


def _value_names(node: ast.AST) -> list[str]:
    """What names the values in an expression: variables, attributes and dict keys (not file names)."""
    words = []
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            words.append(child.id)
        elif isinstance(child, ast.Attribute):
            words.append(child.attr)
        elif isinstance(child, ast.Subscript) and isinstance(child.slice, ast.Constant) and isinstance(child.slice.value, str):
            words.append(child.slice.value)
    return words


def _timing_orderings(path: Path) -> list[str]:
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assert) or any(TIMING_PRAGMA in lines[n - 1] for n in range(node.lineno, node.end_lineno + 1)):
            continue
        for compare in (c for c in ast.walk(node.test) if isinstance(c, ast.Compare)):
            if not any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in compare.ops):
                continue
            operands = [compare.left, *compare.comparators]
            timed = [any(TIMING_WORDS.search(word) for word in _value_names(operand)) for operand in operands]
            zero = [isinstance(operand, ast.Constant) and operand.value == 0 for operand in operands]
            if any(timed) and not all(t or z for t, z in zip(timed, zero)) or sum(timed) > 1:
                found.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{node.lineno}: {ast.unparse(compare)}")
    return found


def test_no_test_asserts_a_latency_a_speed_up_or_a_timing_ratio():
    offenders = [line for path in sorted((REPO / "tests").glob("*.py")) for line in _timing_orderings(path)]
    assert not offenders, "timing relations go to benchmarks/ (or mark a rule over times with " + TIMING_PRAGMA + "):\n" + "\n".join(offenders)


def test_the_timing_rule_catches_what_it_is_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def test():\n    assert 0.8 <= report['ops_sum_ms'] / report['end_to_end_ms'] <= 1.2\n"
                     "    assert int8_latency < fp32_latency\n    assert speedup > 1.5\n    assert row['median_ms'] > 0\n"
                     "    assert (a == 'fp32') == (over_fp32 <= 1.0)  # not a timing assertion: the verdict's rule\n")
    assert [line.split(":")[1] for line in _timing_orderings(probe)] == ["2", "3", "4"]
