"""Every module imports only from lower layers (STYLE.md §1), and `import scdropout` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "scdropout"

# layer of each top-level part of the package -> parts it may import from
BASE = {"_compat", "_settings", "_logging", "_keys", "_utils", "_version"}
ALLOWED: dict[str, set[str]] = {
    "_compat": set(),
    "_settings": {"_logging"},
    "_logging": {"_settings"},
    "_keys": set(),
    "_version": set(),
    "_utils": {"_compat", "_settings", "_logging", "_keys"},
    "io": BASE,
    "kernels": {"_compat", "_settings", "_logging", "_utils"},
    "models": BASE | {"kernels"},
    "datasets": BASE | {"io"},
    "pp": BASE | {"kernels"},
    "tl": BASE | {"kernels", "pp", "models"},
    "get": BASE,
    "pl": BASE | {"get"},
    "cli": BASE | {"io", "kernels", "models", "datasets", "pp", "tl", "get", "pl", "report"},
    "report": BASE | {"io", "kernels", "models", "datasets", "pp", "tl", "get", "pl"},
    "__main__": {"cli"},
    "__init__": BASE | {"io", "kernels", "models", "datasets", "pp", "tl", "get", "pl"},
}
# third-party packages a part must not import (at any depth)
FORBIDDEN: dict[str, set[str]] = {
    "kernels": {"anndata", "pandas", "torch", "scanpy", "matplotlib"},
    "io": {"torch", "scanpy", "matplotlib", "numba"},
    "pp": {"torch", "matplotlib"},
    "get": {"torch", "matplotlib", "numba"},
    "models": {"scanpy", "matplotlib"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Return (target, lineno) for every import, resolved to a scdropout part or a top-level pkg."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PKG)
    pkg_parts = list(rel.parts[:-1])  # package of this module, relative to scdropout
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")
                target = top[1] if top[0] == "scdropout" and len(top) > 1 else top[0]
                out.append((("scdropout." if top[0] == "scdropout" else "") + target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                top = (node.module or "").split(".")
                if top[0] == "scdropout":
                    names = top[1:] or [a.name for a in node.names]
                    out.extend((f"scdropout.{n}", node.lineno) for n in names[:1])
                else:
                    out.append((top[0], node.lineno))
            else:
                base = (
                    pkg_parts[: len(pkg_parts) - (node.level - 1)] if node.level > 1 else pkg_parts
                )
                mod = (node.module or "").split(".") if node.module else []
                full = base + mod
                if full:
                    out.append((f"scdropout.{full[0]}", node.lineno))
                else:  # "from . import x" at package top
                    out.extend((f"scdropout.{a.name}", node.lineno) for a in node.names)
    return out


MODULES = sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_layers(path):
    part = _part(path)
    assert part in ALLOWED, f"{part!r} has no entry in the allowed-edges table"
    bad = []
    for target, line in _imports(path):
        if target.startswith("scdropout."):
            dest = target.split(".", 1)[1]
            if dest != part and dest not in ALLOWED[part]:
                bad.append(f"line {line}: {part} -> {dest}")
        elif target in FORBIDDEN.get(part, set()):
            bad.append(f"line {line}: {part} imports {target}")
    assert not bad, f"{path.relative_to(PKG)} breaks the layering: " + "; ".join(bad)


def test_import_is_light():
    code = (
        "import sys, scdropout\n"
        "heavy = ['torch', 'matplotlib.pyplot', 'scanpy', 'sklearn.manifold']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"`import scdropout` loaded {out}"


def test_lazy_submodules_resolve():
    import scdropout as sd

    assert sd.pl.__name__ == "scdropout.pl"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = sd.nope
