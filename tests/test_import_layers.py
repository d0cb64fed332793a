"""The import graph of ``torchgp``, read statically from its source: no cycles, and lower layers never import higher ones.

Every ``.py`` file under ``torchgp/`` is parsed with :mod:`ast` (nothing is imported); each ``import`` of a
``torchgp`` module is an edge, counted as *top-level* (runs when the module is imported) or *function-level*
(inside a ``def``, runs when called). Imports under ``if TYPE_CHECKING:`` do not run and are not edges.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``; the implicit
import of a module's parent packages is not an edge.

The rules:

(a) no cycle among top-level imports (a cycle makes the import order decide what is defined);
(b) the layers ``linalg < distributions < constraints, priors < module < kernels, means, likelihoods < models
    < mlls, variational < tools``: no module imports a module of a higher layer at top level;
(c) a function-level import may close a cycle only where :data:`LAZY_CYCLES` says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "torchgp"

# Layer of each first-level name under ``torchgp`` (the package, a subpackage or a top-level module).
CORE = -1  # depends on nothing else of torchgp: errors, settings, shapes, private state
TOOLS = 7  # what is built on the GPyTorch-shaped core
LAYERS = {
    "linalg": 0,
    "distributions": 1,
    "constraints": 2,
    "priors": 2,
    "module": 3,
    "kernels": 4,
    "means": 4,
    "likelihoods": 4,
    "models": 5,
    "mlls": 6,
    "variational": 6,
    **dict.fromkeys(
        ["optim", "io", "sklearn", "cli", "cli_multitask", "cli_tables", "cli_fit", "bo", "distributed"], TOOLS
    ),
    **dict.fromkeys(["plot", "demo", "__main__"], TOOLS),
    # user-facing namespaces and tools that use the whole library
    **dict.fromkeys(["check", "testing", "datasets", "metrics", "functions", "lazy"], TOOLS),
    **dict.fromkeys(
        [
            "errors",
            "settings",
            "_settings_base",
            "_settings_compat",
            "_shapes",
            "_record",
            "_state",
            "_module_paths",
            "_fit_memo",
        ],
        CORE,
    ),
    **dict.fromkeys(["_settings_iterative", "_progress", "beta_features", "utils"], CORE),
    "_pyro": 3,  # Pyro support of Module: sampled modules, priors as Pyro distributions
}
# Modules whose layer differs from their first-level name's, with the reason.
LAYER_OVERRIDES = {
    "torchgp": (TOOLS + 1, "the top-level namespace imports everything"),
    "torchgp.utils": (4, "GPyTorch's gpytorch.utils namespace re-exports utils.quadrature"),
    "torchgp.utils.quadrature": (4, "re-exports the Gauss-Hermite quadrature of likelihoods/quadrature.py"),
    "torchgp.utils.cholesky": (0, "re-exports psd_safe_cholesky of linalg/cholesky.py"),
}

# Function-level imports that close a cycle, ``(importer, imported): reason``. Each is a call from a lower-level
# object to the code that dispatches on it; moving the import to the top level would make the pair a cycle.
LAZY_CYCLES = {
    ("torchgp.linalg.operators.base", "torchgp.linalg.operators.basic"): "the base class's operator algebra "
    "(+, *, to_dense fall-backs) builds the concrete operators that subclass it",
    ("torchgp.linalg.operators.base", "torchgp.linalg.operators.structured"): "as above: A + B and A * B "
    "build SumOperator / ProductOperator, subclasses of Operator",
    ("torchgp.linalg.operators.basic", "torchgp.linalg.operators"): "AddedDiagOperator.__init__ wraps a "
    "tensor base with as_operator, defined in the package next to every operator kind",
    ("torchgp.linalg.operators.basic", "torchgp.linalg.operators.kronecker"): "A + diag keeps Kronecker "
    "structure: AddedDiagOperator returns a KroneckerProductAddedDiag, which builds on AddedDiagOperator",
    ("torchgp.linalg.operators.basic", "torchgp.linalg.operators.structured"): "A + diag keeps low-rank "
    "structure: AddedDiagOperator returns a LowRankRootAddedDiag, which builds on AddedDiagOperator",
    ("torchgp.linalg.operators.kronecker", "torchgp.linalg.operators"): "as_operator on a factor",
    ("torchgp.linalg.operators.structured", "torchgp.linalg.operators"): "as_operator on an operand",
    ("torchgp.linalg.operators.linalg_methods", "torchgp.linalg.inv_quad_logdet"): "op.inv_quad_logdet()",
    ("torchgp.linalg.operators.linalg_methods", "torchgp.linalg.solvers"): "op.solve(), op.root_decomposition()",
    ("torchgp.linalg.operators.linalg_methods", "torchgp.linalg.operators.basic"): "methods returning a DenseOperator",
    ("torchgp.linalg.operators.linalg_methods", "torchgp.linalg.operators.structured"): "methods returning a "
    "low-rank root",
    ("torchgp.linalg.inv_quad_logdet", "torchgp.linalg.solvers"): "inv_quad_logdet asks the one solver choice "
    "(solvers.choose_solver), whose Cholesky path is inv_quad_logdet's closed-form backward",
    ("torchgp.linalg.solvers", "torchgp.linalg.iterative"): "the iterative solver, chosen at large n, is "
    "imported when first chosen",
    ("torchgp.linalg.solvers", "torchgp.linalg.structured_solve"): "structured operators' solvers",
    ("torchgp.models.multitask_posterior", "torchgp.models.multitask_fantasy"): "the multitask posterior's "
    "fantasy update returns a KroneckerFantasyPosterior, which builds on the posterior's classes",
    ("torchgp.linalg.factors", "torchgp.linalg.inv_quad_logdet"): "the Cholesky factor's inv_quad_logdet is the "
    "closed-form autograd Function of inv_quad_logdet.py, which asks the solver choice for a factor",
    ("torchgp.module", "torchgp._pyro"): "Pyro is optional: Module's pyro_* methods import it when called, so "
    "import torchgp never imports pyro",
    ("torchgp._pyro", "torchgp.module"): "the Pyro helpers walk Module trees (the pair above)",
    ("torchgp.optim.fit", "torchgp.distributed.data_parallel"): "fit() hands a distributed model to the "
    "data-parallel trainer, which calls fit's optimiser loop on each rank",
}


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> list[str]:
    """The dotted names an import statement imports, relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - (node.level - 1)] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _imports(node: ast.AST, package: str, modules: set[str], in_function: bool):
    """``(dotted name, in_function)`` for every import under ``node`` that runs (not under ``TYPE_CHECKING``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]), package, modules, in_function)
            continue
        inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(child, package, modules):
                yield target, inner
        yield from _imports(child, package, modules, inner)


def build_graph(root: Path = ROOT) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    """``(modules, top_level_edges, function_level_edges)`` of the package at ``root``, from its source."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        name, is_package = _module_name(path, root)
        files[name] = (path, is_package)
    modules = set(files)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    top: dict[str, set[str]] = {m: set() for m in modules}
    lazy: dict[str, set[str]] = {m: set() for m in modules}
    for name, (path, is_package) in files.items():
        package = name if is_package else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target, in_function in _imports(tree, package, modules, False):
            resolved = resolve(target) if target.split(".")[0] == "torchgp" else None
            if resolved is not None and resolved != name:
                (lazy if in_function else top)[name].add(resolved)
        lazy[name] -= top[name]  # a function-level import of what the module imports anyway adds nothing
    return modules, top, lazy


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for start in sorted(graph):
        if start in state:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def layer_of(module: str) -> int | None:
    if module in LAYER_OVERRIDES:
        return LAYER_OVERRIDES[module][0]
    return LAYERS.get(module.split(".")[1]) if "." in module else None


@pytest.fixture(scope="module")
def graph():
    return build_graph()


# ---------------------------------------------------------------------------- the rules
def test_no_cycle_among_top_level_imports(graph):
    _, top, _ = graph
    cycle = find_cycle(top)
    assert cycle is None, (
        "top-level imports form a cycle: " + " -> ".join(cycle) + ". Move the piece both need into a module "
        "of a lower layer that neither imports back."
    )


def test_every_module_has_a_layer(graph):
    modules, _, _ = graph
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, f"modules without a layer: {unplaced}; add their first-level name to LAYERS here."


def test_lower_layers_never_import_higher_ones_at_top_level(graph):
    _, top, _ = graph
    bad = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a in sorted(top)
        for b in sorted(top[a])
        if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
    ]
    assert not bad, "layering broken:\n  " + "\n  ".join(bad) + "\nMove the shared piece down to the lower layer."


def test_function_level_imports_close_cycles_only_where_documented(graph):
    _, top, lazy = graph
    full = {m: top[m] | lazy[m] for m in top}
    closing = {(a, b) for a in lazy for b in lazy[a] if a in reachable(full, b)}
    undocumented = sorted(closing - set(LAZY_CYCLES))
    assert not undocumented, (
        "function-level imports that close an import cycle without a documented reason: "
        f"{undocumented}. Move the shared piece to a lower module, or add the pair to LAZY_CYCLES with why."
    )
    stale = sorted(set(LAZY_CYCLES) - closing)
    assert not stale, f"LAZY_CYCLES lists pairs that no longer close a cycle (remove them): {stale}"


# ---------------------------------------------------------------------------- the test itself
def test_the_graph_reader_sees_what_python_imports(tmp_path):
    pkg = tmp_path / "torchgp"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from torchgp.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n    from torchgp import c\n"
        "def f():\n    from torchgp.sub.b import g\n    import torchgp.c\n"
    )
    (pkg / "sub" / "b.py").write_text("import torchgp.sub.a as a\ndef g():\n    pass\n")
    (pkg / "c.py").write_text("from torchgp.sub import a\n")
    modules, top, lazy = build_graph(pkg)
    assert modules == {"torchgp", "torchgp.sub", "torchgp.sub.a", "torchgp.sub.b", "torchgp.c"}
    assert top["torchgp.sub.a"] == {"torchgp.sub.b"}  # the TYPE_CHECKING import is no edge
    assert lazy["torchgp.sub.a"] == {"torchgp.c"}  # sub.b is imported at the top anyway
    assert top["torchgp.c"] == {"torchgp.sub.a"}
    assert find_cycle(top) == ["torchgp.sub.a", "torchgp.sub.b", "torchgp.sub.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None
