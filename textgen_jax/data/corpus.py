"""The embedded corpus: docstrings of the running Python's standard library as a TFDS dataset.

Every machine with Python has it, it needs no download, and it is real English prose written
by others, which makes it the default corpus of quick starts and tests (DESIGN.md, decision 7).

Three configs:
  * `stdlib_docstrings/documents`: one example per module, feature `text` = the module
    docstring followed by the docstrings of its classes, functions and methods, in source order,
    joined by blank lines.
  * `stdlib_docstrings/pairs`: one example per function or method with a docstring, features
    `code` (its source without the docstring), `docstring` and `text` (= the docstring, so the
    LM pipeline reads either config through the same `text` key).
  * `stdlib_docstrings/kinds`: one example per documented module, class and function, features
    `text` (the docstring), `label` (function / class / module, what it documents) and
    `module` (the module's path): the docstring-kind and -similarity fine-tuning tasks.

Train/validation is decided per module by a stable hash of its path, so a module never lands in
both splits. The standard library differs between Python versions, so the prepared data lives
under a per-Python folder of the data dir (`<data_dir>/python3.11.9/stdlib_docstrings/...`).
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path

import tensorflow_datasets as tfds

from textgen_jax.data._tfds_base import LocalGeneratorBasedBuilder

PYTHON_VERSION = "{}.{}.{}".format(*sys.version_info[:3])
VALIDATION_PER_MILLE = 30  # ~3% of modules go to validation
MIN_DOCUMENT_CHARS = 200  # modules with less documentation than this are mostly boilerplate
_SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def is_validation_module(relative_path: str) -> bool:
    """Whether the module at `relative_path` (to the stdlib root, '/'-separated) is held out.

    Uses sha256 rather than `hash()`, which is salted per process and would reshuffle splits.
    """
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < VALIDATION_PER_MILLE


def stdlib_modules(stdlib_dir: str | None = None) -> list[tuple[str, Path]]:
    """The stdlib's .py files as sorted (path relative to the stdlib, absolute path) pairs."""
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    modules = []
    for directory, subdirs, files in os.walk(root):
        # Pruning in place keeps os.walk out of test suites and installed packages.
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                path = Path(directory) / name
                modules.append((path.relative_to(root).as_posix(), path))
    return sorted(modules)


def _parse(path: Path) -> tuple[str, ast.Module] | None:
    """Source and syntax tree of `path`, or None for files this Python cannot parse."""
    try:
        source = path.read_text(encoding="utf-8")
        return source, ast.parse(source, filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        # lib2to3 test data, Python-2 leftovers and deliberately broken files exist in the stdlib.
        return None


_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _definitions(node: ast.AST) -> Iterator[_Definition]:
    """Classes and functions under `node`, nested ones included, in source order."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child
        yield from _definitions(child)


def module_document(tree: ast.Module) -> str:
    """The module docstring followed by its definitions' docstrings, joined by blank lines."""
    nodes = [tree, *_definitions(tree)]
    # ast.get_docstring(clean=True) applies inspect.cleandoc.
    docstrings = (ast.get_docstring(node, clean=True) for node in nodes)
    return "\n\n".join(d.strip() for d in docstrings if d and d.strip())


def function_without_docstring(source_lines: list[str], function: ast.AST) -> str | None:
    """The dedented source of `function` with its docstring lines removed.

    Returns None when nothing but the docstring would remain, or when the docstring shares a line
    with other code (removing whole lines would then cut code).
    """
    body = function.body
    docstring = body[0]
    if len(body) < 2 or docstring.lineno == function.lineno or body[1].lineno <= docstring.end_lineno:
        return None
    lines = (source_lines[function.lineno - 1:docstring.lineno - 1]
             + source_lines[docstring.end_lineno:function.end_lineno])
    return textwrap.dedent("".join(lines)).rstrip() + "\n"


def module_pairs(source: str, tree: ast.Module) -> Iterator[tuple[str, str, str]]:
    """(qualified name, code without docstring, docstring) for each documented function."""
    source_lines = source.splitlines(keepends=True)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                docstring = ast.get_docstring(child, clean=True)
                if not isinstance(child, ast.ClassDef) and docstring and docstring.strip():
                    code = function_without_docstring(source_lines, child)
                    if code is not None:
                        yield f"{name}@{child.lineno}", code, docstring.strip()
                yield from visit(child, f"{name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


DOCSTRING_KINDS = ("function", "class", "module")


def documented_nodes(tree: ast.Module) -> Iterator[tuple[str, str, str]]:
    """(unique key, kind from DOCSTRING_KINDS, docstring) for the module and each class and
    function under it that has a docstring, in source order."""
    for node in [tree, *_definitions(tree)]:
        docstring = ast.get_docstring(node, clean=True)
        if docstring and docstring.strip():
            if isinstance(node, ast.Module):
                yield "<module>", "module", docstring.strip()
            else:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                yield f"{node.name}@{node.lineno}", kind, docstring.strip()


class StdlibDocstringsConfig(tfds.core.BuilderConfig):
    """`documents`, `pairs` or `kinds`; see the module docstring."""


class StdlibDocstrings(LocalGeneratorBasedBuilder):
    """Docstrings (and code/docstring pairs) of the running Python's standard library."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        StdlibDocstringsConfig(
            name="documents",
            description=f"One document per module of the Python {PYTHON_VERSION} stdlib."),
        StdlibDocstringsConfig(
            name="pairs",
            description=f"Function code/docstring pairs of the Python {PYTHON_VERSION} stdlib."),
        StdlibDocstringsConfig(
            name="kinds",
            description=f"Docstrings of the Python {PYTHON_VERSION} stdlib by what they document."),
    ]
    DEFAULT_CONFIG_NAME = "documents"

    def _info(self) -> tfds.core.DatasetInfo:
        if self.builder_config.name == "documents":
            features = {"text": tfds.features.Text()}
        elif self.builder_config.name == "kinds":
            features = {"text": tfds.features.Text(), "module": tfds.features.Text(),
                        "label": tfds.features.ClassLabel(names=DOCSTRING_KINDS)}
        else:
            features = {"code": tfds.features.Text(), "docstring": tfds.features.Text(),
                        "text": tfds.features.Text()}
        return self.dataset_info_from_configs(
            description=(f"Docstrings of the standard library of Python {PYTHON_VERSION} at "
                         f"{sysconfig.get_paths()['stdlib']}."),
            features=tfds.features.FeaturesDict(features),
            homepage="https://docs.python.org/3/library/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download: the corpus is the running Python.
        modules = stdlib_modules()
        train = [m for m in modules if not is_validation_module(m[0])]
        validation = [m for m in modules if is_validation_module(m[0])]
        return {"train": self._generate_examples(train),
                "validation": self._generate_examples(validation)}

    def _generate_examples(self, modules: list[tuple[str, Path]]):
        for relative_path, path in modules:
            parsed = _parse(path)
            if parsed is None:
                continue
            source, tree = parsed
            if self.builder_config.name == "documents":
                document = module_document(tree)
                if len(document) >= MIN_DOCUMENT_CHARS:
                    yield relative_path, {"text": document}
            elif self.builder_config.name == "kinds":
                for key, kind, docstring in documented_nodes(tree):
                    yield f"{relative_path}:{key}", {
                        "text": docstring, "module": relative_path, "label": kind}
            else:
                for name, code, docstring in module_pairs(source, tree):
                    yield f"{relative_path}:{name}", {
                        "code": code, "docstring": docstring, "text": docstring}


def stdlib_data_dir(data_dir: str) -> str:
    """The per-Python folder of `data_dir` that holds this Python's prepared corpus."""
    return os.path.join(data_dir, f"python{PYTHON_VERSION}")


def prepared_stdlib_docstrings(config_name: str, data_dir: str) -> StdlibDocstrings:
    """The `StdlibDocstrings` builder for `config_name`, prepared under `data_dir` if needed."""
    names = [c.name for c in StdlibDocstrings.BUILDER_CONFIGS]
    if config_name not in names:
        raise ValueError(f"stdlib_docstrings has no config {config_name!r}; use one of {names}, "
                         "e.g. config.data.dataset='stdlib_docstrings/documents'.")
    builder = StdlibDocstrings(config=config_name, data_dir=stdlib_data_dir(data_dir),
                               file_format="array_record")
    builder.download_and_prepare()  # A no-op once the data is in the data dir.
    return builder
