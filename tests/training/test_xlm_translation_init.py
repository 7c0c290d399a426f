"""XLM §5: a translation model whose encoder and decoder both start from one pretrained XLM
(config.init_from with config.model.encoder_decoder), and its fine-tune on parallel data.

A tiny plain XLM is pretrained (MLM, 2 steps) in this process; the WMT14 fine-tune reads
`tfds.testing.mock_data`, which patches this process only, so the loop runs in-process too.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.translate.wmt14  # noqa: F401  (registers the builder)
from conftest import read_metrics
from flax import traverse_util

import textgen_jax
from textgen_jax import models
from textgen_jax.config import ConfigError
from textgen_jax.decoding.generate import GenerationOptions, generate_ids
from textgen_jax.finetune.presets import finetune_config
from textgen_jax.presets import architecture_config
from textgen_jax.training import init_from
from textgen_jax.training.loop import train_and_evaluate

TINY_MODEL = dict(num_layers=2, d_model=64, num_heads=4, d_ff=128, max_len=64, dtype="float32")


def _tiny_run(config, data_dir: str, steps: int = 2):
    config.model.update(**TINY_MODEL)
    config.data.update(data_dir=data_dir, seq_len=32, global_batch_size=4)
    config.optim.warmup_steps = 1
    config.train.update(num_steps=steps, log_every=1, eval_every=steps, checkpoint_every=steps,
                        eval_batches=1, async_checkpointing=False)
    return config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, stdlib_data_dir, stdlib_tokenizer) -> Path:
    """A workdir of the tiny plain XLM (MLM over docstrings 'en' and code 'code')."""
    workdir = tmp_path_factory.mktemp("xlm_pretrained")
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    train_and_evaluate(_tiny_run(architecture_config("xlm"), stdlib_data_dir),
                       str(workdir))
    return workdir


def _flat(params) -> dict[str, np.ndarray]:
    return {path: np.asarray(leaf)
            for path, leaf in traverse_util.flatten_dict(params, sep="/").items()}


def _is_cross_attention(path: str) -> bool:
    return bool({"cross_attention", "cross_attention_norm"} & set(path.split("/")))


def test_both_stacks_start_from_the_pretrained_xlm(pretrained):
    config, theirs = init_from.pretrained_params(str(pretrained))
    theirs = _flat(theirs)
    config.model.encoder_decoder = True
    model = models.build_model(config.model, config.model.vocab_size)
    fresh = _flat(nn.meta.unbox(model.init(jax.random.key(7),
                                           model.example_batch(8))["params"]))
    merged, new, dropped = init_from.merge_pretrained(
        config, traverse_util.unflatten_dict(fresh, sep="/"), str(pretrained))
    merged = _flat(merged)

    # Exactly the cross-attention (and its norm) is new, in every decoder block; nothing of
    # the pretrained model is left unused.
    assert new == sorted(path for path in fresh if path.startswith("decoder/")
                         and _is_cross_attention(path))
    assert {path.split("/")[1] for path in new} == {f"block_{i}" for i in range(2)}
    assert len(new) == 2 * (4 * 2 + 2) and dropped == []
    for path, value in theirs.items():
        np.testing.assert_array_equal(merged[f"decoder/{path}"], value, err_msg=path)
        if path != "output_bias":  # the encoder has no output layer
            np.testing.assert_array_equal(merged[f"encoder/{path}"], value, err_msg=path)
    for path in new:  # random, as initialised, unlike the block's pretrained self-attention
        np.testing.assert_array_equal(merged[path], fresh[path])
        self_attention = path.replace("cross_attention", "attention")
        assert not np.array_equal(merged[path], theirs[self_attention.split("/", 1)[1]]), path


@pytest.mark.parametrize("decoder", [{"num_decoder_heads": 2}, {"decoder_d_ff": 64},
                                     {"num_decoder_layers": 1}])
def test_a_decoder_shaped_unlike_the_pretrained_xlm_is_a_clear_error(pretrained, decoder):
    """Both stacks take the pretrained blocks, so the decoder must have their shape."""
    config, theirs = init_from.pretrained_params(str(pretrained))
    config.model.update(encoder_decoder=True, **decoder)
    model = models.build_model(config.model, config.model.vocab_size)
    fresh = nn.meta.unbox(model.init(jax.random.key(7), model.example_batch(8))["params"])
    (key, value), = decoder.items()
    with pytest.raises(ConfigError, match=f"'{key}': {value}"):
        init_from.merge_pretrained(config, fresh, str(pretrained))


def test_translation_fine_tune_from_the_pretrained_xlm(pretrained, stdlib_data_dir,
                                                       stdlib_tokenizer, tmp_path, capsys):
    """WMT14 de-en (mock data) from the pretrained XLM through the loop: the report names
    exactly the cross-attention as new, the loss is finite and BLEU is evaluated."""
    config = finetune_config("wmt14_translate/de-en", "xlm")
    assert config.model.encoder_decoder
    _tiny_run(config, str(tmp_path / "tfds"))
    # The pretrained model's language 0 is English; German takes the other embedding.
    config.data.languages = config.tokenizer.languages = ("en", "de")
    config.task.update(num_beams=2, max_target_length=6)
    config.init_from = str(pretrained)
    workdir = tmp_path / "translation"
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        result = train_and_evaluate(config, str(workdir))
    report = capsys.readouterr().out
    new = sorted(line.split("newly initialised: ")[1] for line in report.splitlines()
                 if "newly initialised: " in line)
    assert new and all(path.startswith("decoder/block_") and _is_cross_attention(path)
                       for path in new), new
    assert f"initialised from {pretrained}: {len(new)} new parameter(s), 0 dropped" in report
    assert result["step"] == 2 and math.isfinite(result["train"]["loss"])
    evals = read_metrics(workdir, "eval")
    assert sorted(evals) == [0, 2]
    for metrics in evals.values():
        assert math.isfinite(metrics["loss"]) and 0.0 <= metrics["bleu"] <= 100.0

    # textgen_jax.generate translates: the source framed as in training, German in, English
    # out (the task's languages), as generate_ids gives it.
    loaded = textgen_jax.load(str(workdir))
    tok = loaded.tokenizer
    text = "Ein kleines Haus."
    ids = generate_ids(loaded.model, loaded.params, [[tok.bos_id, *tok.encode(text), tok.eos_id]],
                       GenerationOptions(max_new_tokens=4), eos_id=tok.eos_id, pad_id=tok.pad_id,
                       language_id=1, target_language_id=0)[0]
    assert textgen_jax.generate(loaded, text, max_new_tokens=4, temperature=0) == [
        tok.decode([t for t in ids if t != tok.bos_id])]

    # The other way round is a clear error: a plain XLM cannot start from a translation model.
    plain = copy.deepcopy(config)
    plain.model.encoder_decoder = False
    plain_params = models.param_shapes(models.build_model(plain.model, plain.model.vocab_size))
    with pytest.raises(ConfigError, match="encoder_decoder=True"):
        init_from.merge_pretrained(plain, plain_params, str(workdir))
