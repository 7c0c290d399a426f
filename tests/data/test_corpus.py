"""The embedded stdlib-docstrings corpus."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from textgen_jax.data.corpus import (
    PYTHON_VERSION,
    is_validation_module,
    prepared_stdlib_docstrings,
    stdlib_modules,
)


def _all(source) -> list[dict]:
    return [source[i] for i in range(len(source))]


def test_split_is_deterministic_and_disjoint_by_module():
    paths = [path for path, _ in stdlib_modules()]
    held_out = [p for p in paths if is_validation_module(p)]
    assert held_out == [p for p in paths if is_validation_module(p)]
    assert 0.01 < len(held_out) / len(paths) < 0.06
    assert not any(part in ("test", "tests", "idle_test", "site-packages")
                   for p in paths for part in p.split("/")[:-1])


def test_documents_are_english_prose(stdlib_data_dir):
    builder = prepared_stdlib_docstrings("documents", stdlib_data_dir)
    train = _all(builder.as_data_source("train"))
    validation = _all(builder.as_data_source("validation"))
    assert len(train) > 200 and len(validation) > 5
    texts = [e["text"].decode("utf-8") for e in train + validation]
    assert len(set(texts)) == len(texts)  # a module appears once, so in only one split
    words = re.findall(r"[A-Za-z]+", " ".join(texts).lower())
    # Function words of English make up a large share of real prose, not of code or noise.
    common = sum(w in {"the", "a", "of", "to", "is", "and", "in", "if"} for w in words)
    assert common / len(words) > 0.12
    assert min(len(t) for t in texts) >= 200


def test_preparation_is_reused(stdlib_data_dir):
    builder = prepared_stdlib_docstrings("documents", stdlib_data_dir)
    files = sorted(Path(builder.data_dir).iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    again = prepared_stdlib_docstrings("documents", stdlib_data_dir)
    assert sorted(Path(again.data_dir).iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing was rewritten
    assert Path(builder.data_dir).parent.parent.parent.name == f"python{PYTHON_VERSION}"


def test_pairs_have_code_without_docstring(stdlib_data_dir):
    source = prepared_stdlib_docstrings("pairs", stdlib_data_dir).as_data_source("train")
    assert len(source) > 1000
    for index in range(0, len(source), 37):
        example = source[index]
        code = example["code"].decode("utf-8")
        docstring = example["docstring"].decode("utf-8")
        assert example["text"] == example["docstring"]
        function = ast.parse(code).body[0]  # the code alone still parses
        assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        assert ast.get_docstring(function) != docstring
        assert docstring.splitlines()[0] not in code or len(docstring.splitlines()[0]) < 20
