"""Conventions every public function follows (STYLE.md §2), checked on the live package."""

from __future__ import annotations

import inspect
import re

import pytest

import scdropout as sd

# reporters in tl return a table and take no `copy` (STYLE.md §2, "Tables come from reporters")
REPORTERS = {"compare_clusterings"}
ANNOTATORS = [
    (mod, name) for mod in (sd.pp, sd.tl) for name in mod.__all__ if name not in REPORTERS
]
ALL_PUBLIC = [
    (mod, name)
    for mod in (sd.io, sd.pp, sd.tl, sd.get, sd.datasets, sd.kernels)
    for name in mod.__all__
]


def _documented_params(doc: str) -> set[str]:
    section = re.search(r"Parameters\n\s*-+\n(.*?)(\n\s*\n\s*\w[\w ]*\n\s*-+\n|\Z)", doc, re.S)
    assert section, "no Parameters section"
    return set(re.findall(r"^\s{0,8}(\*{0,2}\w+)\s*$", section.group(1), re.M))


def test_there_is_something_to_check():
    assert len(ANNOTATORS) >= 2, "pp/tl export no annotators"


@pytest.mark.parametrize(("mod", "name"), ANNOTATORS, ids=lambda x: getattr(x, "__name__", x))
def test_annotator_signature(mod, name):
    func = getattr(mod, name)
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    assert params[0].name == "adata"
    assert params[0].annotation == "AnnData"
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for p in params[1:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: `{p.name}` is not keyword-only"
    assert "copy" in sig.parameters
    assert sig.parameters["copy"].default is False
    assert "key_added" in sig.parameters
    assert sig.return_annotation == "AnnData | None"
    assert not {"inplace", "subset"} & set(sig.parameters)


@pytest.mark.parametrize("name", sorted(REPORTERS))
def test_reporter_signature(name):
    sig = inspect.signature(getattr(sd.tl, name))
    params = list(sig.parameters.values())
    assert params[0].name == "adata"
    assert params[0].annotation == "AnnData"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert "key_added" in sig.parameters
    assert "copy" not in sig.parameters
    assert sig.return_annotation == "pd.DataFrame"


@pytest.mark.parametrize(("mod", "name"), ALL_PUBLIC, ids=lambda x: getattr(x, "__name__", x))
def test_every_public_function_documents_every_parameter(mod, name):
    obj = getattr(mod, name)
    if not callable(obj):
        pytest.skip("not a function")
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{mod.__name__}.{name} has no docstring"
    if inspect.isclass(obj) and issubclass(obj, tuple):
        return  # NamedTuple results: fields documented in the class docstring
    if name.endswith("_ref"):
        # NumPy references take their kernel's parameters and point at its documentation
        kernel = name.removesuffix("_ref")
        assert f":func:`{kernel}`" in doc, f"{name} must cite its kernel :func:`{kernel}`"
        kernel_params = set(inspect.signature(getattr(mod, kernel)).parameters)
        assert set(inspect.signature(obj).parameters) <= kernel_params
        return
    sig = inspect.signature(obj)
    names = {p.name for p in sig.parameters.values() if p.name not in {"self", "cls"}}
    if not names:
        return
    documented = {n.lstrip("*") for n in _documented_params(doc)}
    missing = names - documented
    assert not missing, f"{mod.__name__}.{name}: undocumented parameters {sorted(missing)}"
    assert "%(" not in doc, "unfilled docstring template"
