"""The task registry: lookups, split checks and the docstring_choice context."""

from __future__ import annotations

import pytest

from textgen_jax.finetune.metrics import METRICS
from textgen_jax.finetune.tasks import KINDS, TASKS, get_task, signature_of


def test_registry_is_consistent():
    for name, task in TASKS.items():
        assert task.name == name and task.kind in KINDS
        assert set(task.metrics) <= set(METRICS), name
        assert task.train_split in task.splits and task.eval_split in task.splits, name
        if task.kind in ("classification", "similarity", "multiple_choice"):
            assert task.num_labels >= 1, name
    assert get_task("glue/stsb").is_regression and not get_task("glue/qqp").is_regression
    assert get_task("glue/mrpc").both_orders and not get_task("glue/rte").both_orders


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"config.task.name='glue/sst-2'.*'glue/sst2'"):
        get_task("glue/sst-2")


def test_missing_split_names_it_and_the_available_ones():
    task = get_task("glue/mnli")
    task.check_split("validation_matched[:10%]+validation_mismatched")
    with pytest.raises(ValueError, match=r"no split 'validation'.*'validation_matched'"):
        task.check_split("train[:5]+validation")


def test_signature_of_drops_decorators_and_body():
    code = ("@functools.cache\ndef area(width: int,\n         height: int = (1)) -> int:\n"
            "    return width * height\n")
    assert signature_of(code) == ("def area(width: int,\n         height: int = (1)) -> int:")
    assert signature_of("async def fetch(self):\n    pass\n") == "async def fetch(self):"


def test_conll_label_names_are_the_datasets():
    import tensorflow_datasets as tfds
    import tensorflow_datasets.text.conll2003  # noqa: F401

    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE):
        names = tfds.builder("conll2003").info.features["ner"].feature.names
    assert tuple(names) == get_task("conll2003").label_names
