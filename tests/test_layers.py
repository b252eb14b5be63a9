"""The package's import graph: one way down the layers, no cycle, the contracts in one place.

Read from the AST of every module under graphopt/ (imports inside functions included, since a
lazy import is still a dependency). A module may import its own package (``graphopt.X``) and any
package of a lower layer, never one of its own layer or above.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "graphopt")

# Lowest first; each entry is a layer of top-level parts of graphopt (packages or modules).
LAYERS = [
    {"errors", "ev", "version", "_tensorflow"},  # the root exception, the EmbeddingVariable contract
    # Atomic outputs; CSV cells; checkpoints; graph protos (graph/ and checkpoint/ know nothing of
    # each other); the op library and its Python API.
    {"output", "tabular", "checkpoint", "graph", "ops"},
    # A model read from disk (graph + checkpoint); what a model holds; what uses the ops.
    {"model_io", "analysis", "keras", "distribute"},
    # Deltas: read from saved models (model_io) and from Keras models' tables (keras).
    {"online"},
    # The three jobs side by side, and the course's demo code (its data, model builders, demo
    # training), which they do not need: validate reads the course's samples through a plug-in.
    # tf_keras (the tf_keras layer and its conversion) builds on keras/.
    {"rewrite", "validate", "serve", "course", "tf_keras"},
    {"cli"},  # one thin module per command
    {"", "__main__"},  # the package itself (library users' `import graphopt`), python -m graphopt
]
LAYER_OF = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _modules():
    out = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(name):
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def import_graph():
    """{module: {(imported module, line)}} over graphopt's own modules."""
    graph = {}
    for module, path in MODULES.items():
        found = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                names = [(a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from graphopt.graph import io` imports the module graphopt.graph.io
                names = [
                    (
                        f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module,
                        node.lineno,
                    )
                    for a in node.names
                ]
            else:
                continue
            found |= {(_resolve(n), line) for n, line in names if n.split(".")[0] == "graphopt"}
        graph[module] = {(m, line) for m, line in found if m != module}
    return graph


def _part(module):
    return module.split(".")[1] if "." in module else ""


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in MODULES}
    assert parts <= set(LAYER_OF), f"give these a layer in LAYERS: {sorted(parts - set(LAYER_OF))}"


def test_no_import_goes_up_or_sideways_between_layers():
    wrong = [
        f"{MODULES[m]}:{line}: {m} (layer {LAYER_OF[_part(m)]}) imports {target} "
        f"(layer {LAYER_OF[_part(target)]})"
        for m, imports in import_graph().items()
        for target, line in imports
        if _part(target) != _part(m) and LAYER_OF[_part(target)] >= LAYER_OF[_part(m)]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_the_package_itself():
    # `import graphopt` loads TensorFlow and the ops as a side effect (for library users); a
    # module that needs the op library calls graphopt.ops.load_library().
    wrong = [
        f"{MODULES[m]}:{line}"
        for m, imports in import_graph().items()
        for t, line in imports
        if t == "graphopt"
    ]
    assert not wrong, wrong


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t, _ in imports} for m, imports in import_graph().items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_validate_imports_nothing_from_rewrite():
    wrong = [
        f"{MODULES[m]}:{line}: {t}"
        for m, imports in import_graph().items()
        if _part(m) == "validate"
        for t, line in imports
        if _part(t) == "rewrite"
    ]
    assert not wrong, wrong


def test_the_engine_imports_no_target_pass():
    # rewrite_model asks the target (TARGETS): the engine modules import no target's package.
    engine = [m for m in MODULES if m.startswith("graphopt.rewrite.") and ".targets" not in m]
    engine.remove("graphopt.rewrite.target")
    wrong = [
        f"{MODULES[m]}:{line}: {t}"
        for m, imports in import_graph().items()
        if m in engine
        for t, line in imports
        if t.startswith("graphopt.rewrite.targets.")
    ]
    assert not wrong, wrong


def _code_strings(tree):
    """The string constants of a module that are not docstrings."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_op_names_are_spelled_only_in_the_contract():
    # Docstrings may show the patterns a pass rewrites; code takes the names from graphopt.ev.contract.
    contract = os.path.join(PACKAGE, "ev", "contract.py")
    wrong = [
        f"{path}:{n.lineno}: {n.value!r}"
        for path in MODULES.values()
        if path != contract
        for n in _code_strings(ast.parse(open(path).read(), path))
        if "GraphoptEv" in n.value
    ]
    assert not wrong, "\n".join(wrong)
