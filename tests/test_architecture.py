"""The library's shape, checked on its source: no import circle, pipeline parts reached only through the model backends, one
place that combines the guidance branches, and method names decided by the registry alone."""
from __future__ import annotations

import ast
from pathlib import Path

from memcurv.schema import METHODS

LIB = Path(__file__).resolve().parents[1] / "memcurv"
SOURCES = {p: ast.parse(p.read_text()) for p in sorted(LIB.rglob("*.py")) if p.name != "_modidx.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, tree) -> set[str]:
    "The memcurv modules `path` imports at its top level (imports inside functions load lazily and cannot circle)."
    here, out = module_name(path).split("."), set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from the module's package
                pkg = here[:len(here) - node.level] if path.name != "__init__.py" else here[:len(here) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base.startswith("memcurv"): out.add(base)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("memcurv")}
    return out


def test_no_import_circle():
    graph = {module_name(p): imports(p, t) - {module_name(p)} for p, t in SOURCES.items()}
    state, path = {}, []
    def visit(m):
        state[m] = "open"; path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open": raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state: visit(n)
        state[m] = "done"; path.pop()
    for m in sorted(graph):
        if m not in state: visit(m)


PARTS = {"unet", "text_encoder", "tokenizer", "vae"}


def test_pipeline_parts_only_in_the_backends():
    found = [f"{p.relative_to(LIB)}:{n.lineno} .{n.attr}" for p, t in SOURCES.items() if "models" not in p.relative_to(LIB).parts
             for n in ast.walk(t) if isinstance(n, ast.Attribute) and n.attr in PARTS]
    assert not found, f"outside memcurv/models: {found}"


def _is_guidance(node) -> bool:
    "An expression `u + w * (c - u)` (either factor order): the combination of the guidance branches."
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.BinOp)
            and isinstance(node.right.op, ast.Mult)):
        return False
    diff = [f for f in (node.right.left, node.right.right) if isinstance(f, ast.BinOp) and isinstance(f.op, ast.Sub)]
    # Predictions are named eps*/e_* throughout memcurv: that tells a guidance step from an interpolation lo + (hi - lo) r.
    names = {x.id if isinstance(x, ast.Name) else x.attr for x in ast.walk(node.left) if isinstance(x, (ast.Name, ast.Attribute))}
    return any(ast.dump(d.right) == ast.dump(node.left) for d in diff) and any("eps" in n or n.startswith("e_") for n in names)


def test_one_place_combines_the_guidance_branches():
    found = [f"{p.relative_to(LIB)}:{n.lineno}" for p, t in SOURCES.items() for n in ast.walk(t) if _is_guidance(n)]
    assert len(found) == 1 and found[0].startswith("sampling.py"), found


def test_no_method_name_tested_by_prefix_outside_the_registry():
    names = set(METHODS)
    found = []
    for p, t in SOURCES.items():
        if p.name == "schema.py": continue
        for n in ast.walk(t):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("startswith", "endswith")
                    and n.args and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
                s = n.args[0].value
                if any(m.startswith(s) if n.func.attr == "startswith" else m.endswith(s) for m in names):
                    found.append(f"{p.relative_to(LIB)}:{n.lineno} {n.func.attr}({s!r})")
    assert not found, found
