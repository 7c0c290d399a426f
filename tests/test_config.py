"""Config checks, the GPT-2 presets against the paper sizes, and unknown keys on the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from textgen_jax import models
from textgen_jax.config import ConfigError, base_config, from_dict, to_json, validate

REPO = Path(__file__).resolve().parents[1]

# Parameter counts of the released GPT-2 checkpoints (vocabulary 50257, 1024 positions, tied
# embeddings): 124M, 355M, 774M and 1.5B (1558M).
PAPER_SIZES = {"small": 124e6, "medium": 355e6, "large": 774e6, "xl": 1558e6}


def _gpt2_presets():
    spec = importlib.util.spec_from_file_location("gpt2_presets", REPO / "configs" / "gpt2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_base_config_is_valid():
    validate(base_config())


@pytest.mark.parametrize("key, value, fragments", [
    ("model.d_model", 130, ["config.model.d_model=130", "config.model.num_heads=4"]),
    ("model.num_decoder_heads", 3, ["config.model.d_model=128",
                                    "config.model.num_decoder_heads=3"]),
    ("model.decoder_d_ff", -1, ["config.model.decoder_d_ff=-1"]),
    ("model.dtype", "float16", ["config.model.dtype='float16'"]),
    ("optim.lr", -1.0, ["config.optim.lr=-1.0", "positive learning rate"]),
    ("optim.lr", float("nan"), ["config.optim.lr=nan"]),
    ("optim.b2", 1.0, ["config.optim.b2=1.0", "[0, 1)"]),
    ("data.global_batch_size", 0, ["config.data.global_batch_size=0", "positive"]),
    ("model.dropout", 1.0, ["config.model.dropout=1.0", "[0, 1)"]),
    ("noise.infill_rate", 1.5, ["config.noise.infill_rate=1.5", "[0, 1]"]),
    ("train.num_steps", 0, ["config.train.num_steps=0"]),
    ("task.num_beams", 0, ["config.task.num_beams=0"]),
    ("task.doc_stride", 0, ["config.task.doc_stride=0"]),
    ("sample.temperature", -0.5, ["config.sample.temperature=-0.5"]),
    ("data.seq_len", 512, ["config.data.seq_len=512", "config.model.max_len=256"]),
    ("optim.decay", "step", ["config.optim.decay='step'"]),
    ("optim.grad_accum_steps", 0, ["config.optim.grad_accum_steps=0"]),
    ("tokenizer.kind", "wordpiece", ["config.tokenizer.kind='wordpiece'"]),
    ("data.dataset", "", ["config.data.dataset", "config.data.files"]),
    ("mesh.fsdp", 0, ["config.mesh.fsdp=0"]),
    ("mesh.tensor", -2, ["config.mesh.tensor=-2"]),
])
def test_validate_names_the_bad_value(key, value, fragments):
    config = base_config()
    section, leaf = key.split(".")
    config[section][leaf] = value
    with pytest.raises(ConfigError) as error:
        validate(config)
    for fragment in fragments:
        assert fragment in str(error.value), (fragment, str(error.value))


def test_local_files_replace_a_dataset_name():
    config = base_config()
    config.data.dataset, config.data.files = "", "/data/*.txt"
    validate(config)


def test_config_survives_its_json_round_trip():
    config = _gpt2_presets().get_config("small")
    config.tokenizer.languages = ("en", "fr")
    restored = from_dict(json.loads(to_json(config)))
    assert restored.to_dict() == config.to_dict()
    assert isinstance(restored.sample.prompts, tuple)  # tuples come back as tuples


def _parameter_count(config) -> int:
    vocab = config.model.vocab_size or config.tokenizer.vocab_size
    model = models.build_model(config.model, vocab)
    shapes = jax.eval_shape(model.init, jax.random.key(0), model.example_batch(8))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def _transformers_count(config) -> int:
    import torch
    import transformers
    m = config.model
    hf_config = transformers.GPT2Config(
        n_layer=m.num_layers, n_embd=m.d_model, n_head=m.num_heads, n_inner=m.d_ff,
        n_positions=m.max_len, vocab_size=m.vocab_size or config.tokenizer.vocab_size)
    with torch.device("meta"):  # shapes only, nothing allocated
        hf_model = transformers.GPT2LMHeadModel(hf_config)
    return sum(p.numel() for p in hf_model.parameters())  # the tied lm_head counts once


@pytest.mark.parametrize("preset", ["tiny", "small", "medium", "large", "xl"])
def test_gpt2_presets_are_valid_and_have_the_paper_sizes(preset):
    config = _gpt2_presets().get_config(preset)
    validate(config)
    count = _parameter_count(config)
    assert count == _transformers_count(config)
    if preset in PAPER_SIZES:
        m = config.model
        assert (m.vocab_size, m.max_len, m.d_ff) == (50257, 1024, 4 * m.d_model)
        # The released sizes are rounded to the million (the count itself is exact above).
        assert count == pytest.approx(PAPER_SIZES[preset], abs=0.5e6), count


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="'huge'"):
        _gpt2_presets().get_config("huge")


def test_cli_rejects_an_unknown_config_key_before_touching_the_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "textgen_jax.cli", "train", "--config", "configs/gpt2.py:tiny",
         "--workdir", str(workdir), "--config.optim.lrr=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown config key 'lrr'" in result.stderr and '"lr"' in result.stderr
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


def test_cli_names_an_unknown_preset_or_a_bad_value_in_one_line(tmp_path):
    def train(*flags):
        return subprocess.run(
            [sys.executable, "-m", "textgen_jax.cli", "train", "--workdir",
             str(tmp_path / "run"), *flags], cwd=REPO, capture_output=True, text=True,
            timeout=120)
    unknown = train("--config", "configs/gpt2.py:huge")
    assert unknown.returncode == 2, unknown.stderr
    assert "unknown gpt2 preset 'huge'" in unknown.stderr.splitlines()[0]
    assert "Traceback" not in unknown.stderr
    negative = train("--config", "configs/gpt2.py:tiny", "--config.optim.lr=-1")
    assert negative.returncode == 1, negative.stderr
    assert negative.stderr.strip().splitlines()[-1] == (
        "textgen-jax train: error: config.optim.lr=-1.0 is out of range: use a positive "
        "learning rate, e.g. 3e-4.")
    assert "Traceback" not in negative.stderr
