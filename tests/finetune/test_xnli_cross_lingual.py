"""Cross-lingual classification (XLM §5.2, XNLI): fine-tune in one language
(config.task.language), evaluate in the others (config.task.eval_languages -> accuracy_<lang>).

The loop runs in-process on `tfds.testing.mock_data` (it patches this process only) with
hand-written XNLI examples whose premise and hypothesis exist in English, German and French.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.text.xnli  # noqa: F401  (registers the builder)
from conftest import read_metrics
from sklearn.metrics import accuracy_score

import textgen_jax
from textgen_jax import models
from textgen_jax.finetune.pipelines import finetune_dataset
from textgen_jax.finetune.tasks import XNLI_LANGUAGES, in_language
from textgen_jax.training.loop import train_and_evaluate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LANGUAGES = ("en", "de", "fr")
PREMISES = [{"en": "A man is eating.", "de": "Ein Mann isst.", "fr": "Un homme mange."},
            {"en": "The cat sleeps.", "de": "Die Katze schläft.", "fr": "Le chat dort."},
            {"en": "It is raining.", "de": "Es regnet.", "fr": "Il pleut."},
            {"en": "She reads a book.", "de": "Sie liest ein Buch.", "fr": "Elle lit un livre."}]
HYPOTHESES = [{"en": "Someone eats.", "de": "Jemand isst.", "fr": "Quelqu'un mange."},
              {"en": "The cat runs.", "de": "Die Katze rennt.", "fr": "Le chat court."},
              {"en": "It is sunny.", "de": "Es ist sonnig.", "fr": "Il fait beau."},
              {"en": "She reads.", "de": "Sie liest.", "fr": "Elle lit."}]
LABELS = (0, 2, 2, 0)


def _xnli_examples(_builder, split, **_):
    del split
    return [{"premise": {lang: premise[lang].encode() for lang in LANGUAGES},
             "hypothesis": {"language": np.array([lang.encode() for lang in LANGUAGES]),
                            "translation": np.array([hypothesis[lang].encode()
                                                     for lang in LANGUAGES])},
             "label": np.int64(label)}
            for premise, hypothesis, label in zip(PREMISES, HYPOTHESES, LABELS)]


def _mock():
    return tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE,
                                  as_data_source_fn=_xnli_examples)


def _preset(arch: str):
    spec = importlib.util.spec_from_file_location("finetune_xnli",
                                                  CONFIGS / "finetune" / "xnli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arch)


def test_presets_evaluate_the_models_other_xnli_languages():
    for arch, others in (("xlm-enfr_1024", ("fr",)), ("xlm", ()), ("bert", ())):
        config = _preset(arch)
        assert (config.task.name, config.task.language) == ("xnli", "en")
        assert config.task.eval_languages == others, arch


def _config(data_dir: str):
    """XNLI on a tiny XLM with a language embedding per language, trained in English."""
    config = _preset("xlm")
    config.model.update(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_len=64,
                        num_languages=len(LANGUAGES), dtype="float32")
    config.data.update(data_dir=data_dir, seq_len=32, global_batch_size=4,
                       languages=LANGUAGES)
    config.tokenizer.languages = LANGUAGES
    config.optim.update(warmup_steps=1, lr=1e-3)
    config.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
                        eval_batches=1, async_checkpointing=False)
    config.task.update(language="en", eval_languages=("de", "fr"))
    return config


def test_trained_in_english_evaluated_in_german_and_french(stdlib_tokenizer, tmp_path,
                                                           capsys):
    config = _config(str(tmp_path / "tfds"))
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    with _mock():
        result = train_and_evaluate(config, str(workdir))
    assert result["step"] == 2 and math.isfinite(result["train"]["loss"])
    assert "| accuracy_de " in capsys.readouterr().out
    evals = read_metrics(workdir, "eval")
    assert sorted(evals) == [0, 2]
    for metrics in evals.values():
        for language in ("de", "fr"):
            assert 0.0 <= metrics[f"accuracy_{language}"] <= 1.0
            assert math.isfinite(metrics[f"loss_{language}"])
            # Each language's own text and language id: a loss of its own (the same rows would
            # give the bitwise same loss: one program, one input).
            assert abs(metrics[f"loss_{language}"] - metrics["loss"]) > 1e-6, metrics

    # accuracy_<lang> is scikit-learn's accuracy of the final model on that language's rows,
    # built here straight from the pipeline with config.task.language = lang.
    params = textgen_jax.load(str(workdir)).params
    model = models.build_model(config.model, config.model.vocab_size)
    for language in ("en", "de", "fr"):
        config.task.language = language
        with _mock():
            batch = next(iter(finetune_dataset(config, stdlib_tokenizer, "test", shuffle=False,
                                               repeat=False)))
        assert (batch["langs"][batch["segment_ids"] > 0] == LANGUAGES.index(language)).all()
        logits = model.apply({"params": params}, batch)
        predictions = np.asarray(jax.numpy.argmax(logits["classification_logits"], axis=-1))
        name = "accuracy" if language == "en" else f"accuracy_{language}"
        # The same predictions, counted in float64 both ways: within 1e-12.
        assert evals[2][name] == pytest.approx(accuracy_score(LABELS, predictions),
                                               rel=1e-12), language


def test_eval_languages_a_task_lacks_are_named(task_config):
    config = task_config("xnli", "xlm")
    with pytest.raises(ValueError, match="'xx', not a language of task 'xnli'"):
        in_language(config, "xx")
    for task in ("glue/sst2", "wmt14_translate/de-en"):
        config = task_config(task, "xlm")
        config.task.eval_languages = ("de",)
        with pytest.raises(ValueError, match=f"task '{task}' is not a multilingual "
                                             "classification task"):
            in_language(config, "de")


# ---- XLM §5.2's protocol: MNLI in English, XNLI zero-shot in every language -----------------

def _zero_shot_examples(calls):
    """multi_nli: English pairs (its own texts); xnli: the pairs above in all 15 languages (each
    language's text tagged with its code, so every language reads a text of its own)."""
    def examples(builder, split, **_):
        calls.append((builder.name, split))
        if builder.name == "multi_nli":
            return [{"premise": premise["en"].encode(), "hypothesis": hypothesis["en"].encode(),
                     "label": np.int64(label)}
                    for premise, hypothesis, label in zip(PREMISES[::-1], HYPOTHESES[::-1],
                                                          LABELS[::-1])]
        text = lambda texts, lang: texts.get(lang, f"{lang}: {texts['en']}")  # noqa: E731
        return [{"premise": {lang: text(premise, lang).encode() for lang in XNLI_LANGUAGES},
                 "hypothesis": {"language": np.array([lang.encode() for lang in XNLI_LANGUAGES]),
                                "translation": np.array([text(hypothesis, lang).encode()
                                                         for lang in XNLI_LANGUAGES])},
                 "label": np.int64(label)}
                for premise, hypothesis, label in zip(PREMISES, HYPOTHESES, LABELS)]
    return examples


def test_zero_shot_fine_tunes_on_mnli_and_reports_every_xnli_language(stdlib_tokenizer,
                                                                      tmp_path):
    config = _preset("zero_shot,bert")
    assert (config.task.name, config.data.train_split, config.data.eval_split) == (
        "xnli_zero_shot", "train", "test")
    assert set(config.task.eval_languages) == set(XNLI_LANGUAGES) - {"en"}
    config.model.update(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_len=64,
                        dtype="float32")
    config.data.update(data_dir=str(tmp_path / "tfds"), seq_len=32, global_batch_size=4)
    config.optim.update(warmup_steps=1, lr=1e-3)
    config.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
                        eval_batches=1, async_checkpointing=False)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    calls = []
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE,
                                as_data_source_fn=_zero_shot_examples(calls)):
        result = train_and_evaluate(config, str(workdir))
    assert result["step"] == 2
    # Trained on MNLI's training set only; XNLI read for evaluation only.
    assert {split for name, split in calls if name == "multi_nli"} == {"train"}
    assert {split for name, split in calls if name == "xnli"} == {"test"}
    final = read_metrics(workdir, "eval")[2]
    for language in XNLI_LANGUAGES:
        name = "accuracy" if language == "en" else f"accuracy_{language}"
        assert 0.0 <= final[name] <= 1.0, language
    # Each language reads its own text: losses differ from English's.
    assert all(abs(final[f"loss_{language}"] - final["loss"]) > 1e-6
               for language in XNLI_LANGUAGES[1:])
