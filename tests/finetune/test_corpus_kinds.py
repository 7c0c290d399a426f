"""The `kinds` config of the embedded corpus: docstrings labelled by what they document."""

from __future__ import annotations

import ast
import collections
import inspect
import json
import json.decoder

from textgen_jax.data.corpus import DOCSTRING_KINDS, prepared_stdlib_docstrings


def test_kinds_label_docstrings_by_what_they_document(finetune_data_dir):
    builder = prepared_stdlib_docstrings("kinds", finetune_data_dir)
    assert builder.info.features["label"].names == list(DOCSTRING_KINDS)
    examples = [ex for split in ("train", "validation")
                for ex in builder.as_data_source(split)]
    by_text = collections.defaultdict(set)
    for ex in examples:
        by_text[ex["text"].decode()].add((ex["module"].decode(), DOCSTRING_KINDS[ex["label"]]))
    # Three docstrings whose kind we know, read back from the running Python's files.
    assert ("json/__init__.py", "module") in by_text[ast.get_docstring(
        ast.parse(open(json.__file__, encoding="utf-8").read()), clean=True).strip()]
    assert ("json/decoder.py", "class") in by_text[
        inspect.cleandoc(json.decoder.JSONDecoder.__doc__).strip()]
    assert ("json/__init__.py", "function") in by_text[inspect.cleandoc(json.dumps.__doc__)]
    counts = collections.Counter(DOCSTRING_KINDS[ex["label"]] for ex in examples)
    # Every kind is well represented (functions dominate: ~80% on Python 3.11).
    assert all(counts[kind] >= 0.05 * len(examples) for kind in DOCSTRING_KINDS), counts
