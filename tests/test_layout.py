"""The layout's arrows (docs/architecture.md "Layout and dependencies"), read from the source: which
package may import which, no import cycles, no production module importing a toy builder or an
experiment, and the Serve ingress free of model libraries."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("trust", "camera", "models", "pipeline", "render", "jobs")
PROJECT = (*PACKAGES, "benchmarks", "tests")
PRODUCTION = ("trust", "camera", "models", "pipeline", "render")

# Inside models/: the concern folders and what each may import (besides itself, camera and the
# shared leaf modules ``models.variants``, ``prompts``, ``precision``, ``locations``).
MODELS_LEAVES = ("models.variants", "models.prompts", "models.precision", "models.locations", "models._legacy")
MODELS_ARROWS = {
    "models.generator": (),
    "models.gaussians": ("models.metrics.image",),  # the fit's SSIM term
    "models.metrics": ("models.gaussians",),
    "models.reconstructor": ("models.gaussians", "models.metrics"),
    "models.pipeline_videomv": ("models.generator", "models.reconstructor", "models.gaussians", "models.metrics"),
    "models.official_checkpoint": ("models.pipeline_videomv", "models.generator", "models.reconstructor"),
    "models.toy": ("models",),
}
# The main job at toy scale and the toy builder's own entry point train and build the toy models.
TOY_USERS = ("pipeline.local_run", "jobs.make_tiny")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, pathlib.Path]:
    modules = {}
    for package in PROJECT:
        for path in (ROOT / package).rglob("*.py"):
            modules[module_name(path)] = path
    return modules


MODULES = project_modules()


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (module level, inside functions, and in
    ``if TYPE_CHECKING`` blocks: a type-only import is an arrow too); ``from a import b`` counts
    ``a.b`` when that is a module."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(MODULES)
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in the module itself
                found.add(node.module)
    return found


IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(importers: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """"module imports target" for every module under ``importers`` (not in ``allowed``) importing
    anything under ``forbidden``."""
    return sorted(f"{module} imports {target}" for module, targets in IMPORTS.items()
                  if any(within(module, i) for i in importers) and module not in allowed
                  for target in targets if any(within(target, f) for f in forbidden))


def test_the_layer_arrows_point_one_way():
    """jobs/ -> pipeline/ -> render/, models/ -> camera/; nothing imports jobs/, benchmarks/ or tests/."""
    assert offenders(PRODUCTION, ("jobs", "benchmarks", "tests")) == []
    assert offenders(("jobs",), ("render", "bpy", "benchmarks", "tests")) == []
    assert offenders(("models",), ("pipeline", "render", "jobs", "ray", "bpy")) == []
    assert offenders(("render",), ("torch", "models", "pipeline", "jobs")) == []
    assert offenders(("camera",), ("torch", "models", "pipeline", "render", "jobs", "ray")) == []
    assert offenders(("trust",), ("camera", "torch", "models", "pipeline", "render", "jobs", "ray", "bpy")) == []
    bpy_users = sorted({m for m, targets in IMPORTS.items() if "bpy" in targets and not within(m, "tests")})
    assert all(within(m, "render") for m in bpy_users), bpy_users


def test_the_concerns_inside_models_point_one_way():
    problems = []
    for module, targets in IMPORTS.items():
        concern = next((c for c in MODELS_ARROWS if within(module, c)), None)
        if concern is None:
            continue
        for target in targets:
            if not within(target, "models") or within(target, concern) or target == "models":
                continue
            if target in MODELS_LEAVES or any(within(target, a) for a in MODELS_ARROWS[concern]):
                continue
            problems.append(f"{module} imports {target}")
    assert problems == []


def test_no_production_module_imports_a_toy_builder_or_an_experiment():
    toy = tuple(m for m in MODULES if within(m, "models.toy"))
    experiments = tuple(m for m in MODULES if within(m, "pipeline.experiments"))
    assert offenders((*PRODUCTION, "jobs"), ("models.toy",), allowed=(*toy, *experiments, *TOY_USERS)) == []
    assert offenders((*PRODUCTION, "jobs"), ("pipeline.experiments",), allowed=experiments) == []


def test_no_import_cycles():
    graph = {m: {t for t in targets if t in MODULES and t != m} for m, targets in IMPORTS.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("module", ["pipeline.serve.ingress", "pipeline.serve.api", "pipeline.serve.app"])
def test_the_serve_ingress_loads_no_model_library(module):
    """The CPU ingress (and ``jobs/serve.py --help``) never import diffusers or transformers: the
    model code lives in the deployment's process alone."""
    code = (f"import sys; import {module}; "
            "print(sorted(m for m in ('diffusers', 'transformers', 'models.pipeline_videomv.pipeline_videomv') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_variant_is_never_a_string_compared_outside_its_home():
    """``models/variants.py`` is the one home of what differs between the text and the image model:
    code asks a ``Variant`` (``VARIANTS[name].takes_prompt``...), never compares its name."""
    names = {"t2v", "i2v"}
    found = []
    for module, path in MODULES.items():
        if module == "models.variants" or not any(within(module, p) for p in (*PRODUCTION, "jobs")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                constants = [o.value for o in operands if isinstance(o, ast.Constant)]
                constants += [e.value for o in operands if isinstance(o, (ast.Tuple, ast.List, ast.Set))
                              for e in o.elts if isinstance(e, ast.Constant)]
                if names & {c for c in constants if isinstance(c, str)}:
                    found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_every_public_function_has_type_hints():
    """The guide's rule for public functions, kept: every module-level function and every method of a
    public class in the production code and jobs/ that is public (no leading underscore) annotates
    its parameters (``*args``/``**kwargs`` included) and its return."""
    def missing(function: ast.FunctionDef, where: str) -> list[str]:
        arguments = [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs,
                     *(a for a in (function.args.vararg, function.args.kwarg) if a is not None)]
        unannotated = [a.arg for a in arguments if a.annotation is None and a.arg not in ("self", "cls")]
        if function.returns is None:
            unannotated.append("return")
        return [f"{where}.{function.name}:{function.lineno} ({', '.join(unannotated)})"] if unannotated else []

    def public_functions(body: list[ast.stmt]) -> list[ast.FunctionDef]:
        return [node for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and not node.name.startswith("_")]

    found = []
    for module, path in MODULES.items():
        if not any(within(module, p) for p in (*PRODUCTION, "jobs")):
            continue
        tree = ast.parse(path.read_text())
        for function in public_functions(tree.body):
            found += missing(function, module)
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")):
            for function in public_functions(cls.body):
                found += missing(function, f"{module}.{cls.name}")
    assert found == []


SCRIPT_FOLDERS = ("jobs", "benchmarks", "scripts")
PATH_LINE = "sys.path[0] = "


def test_every_script_starts_with_the_shared_preamble():
    """Every script (a file of jobs/, benchmarks/ or scripts/ run as ``__main__``) that imports the project puts the project first on the path, then imports
    ``pipeline.entry`` (which sets up logging) before anything else of the project: one preamble
    (pipeline/entry.py says why), and no script sets up logging its own way."""
    found = []
    for folder in SCRIPT_FOLDERS:
        for path in sorted((ROOT / folder).glob("*.py")):
            if '__name__ == "__main__"' not in path.read_text():  # a module the scripts share
                continue
            tree = ast.parse(path.read_text())
            project = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                       and any(within(name, package) for name in imports_of_node(node) for package in PROJECT)]
            if not project:
                continue
            lines = path.read_text().splitlines()
            path_line = next((number for number, line in enumerate(lines, 1) if line.startswith(PATH_LINE)), None)
            first = project[0]
            if (path_line is None or first.lineno < path_line or "pipeline.entry" not in imports_of_node(first)
                    or any(ast.unparse(node).startswith("configure_logging(") for node in ast.walk(tree))):
                found.append(f"{path.relative_to(ROOT)}: first project import at line {first.lineno}: "
                             f"{ast.unparse(first)}")
    assert found == []


def imports_of_node(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""]
