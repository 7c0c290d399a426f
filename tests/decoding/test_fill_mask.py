"""fill-mask on a briefly trained XLM checkpoint, through the library and the real CLI."""

from __future__ import annotations

import numpy as np
import pytest

import textgen_jax
import tolerances
from textgen_jax.decoding import fill_mask


@pytest.fixture(scope="module")
def xlm_workdir(tmp_path_factory, stdlib_data_dir, stdlib_tokenizer):
    from conftest import REPO, cli_command, cli_env, train_flags
    import subprocess

    workdir = tmp_path_factory.mktemp("xlm")
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    flags = train_flags(stdlib_data_dir, "configs/xlm.py:tiny") + (
        "--config.train.num_steps=20", "--config.train.eval_every=20")
    subprocess.run(cli_command("train", workdir, *flags), env=cli_env(), check=True,
                   capture_output=True, timeout=600, cwd=REPO)
    return workdir


def test_fill_mask_ranks_k_fillers_per_mask(xlm_workdir):
    loaded = textgen_jax.load(str(xlm_workdir))
    fillers = fill_mask(loaded, "Return the <mask> of the <mask>.", top_k=4)
    assert len(fillers) == 2 and all(len(candidates) == 4 for candidates in fillers)
    # A float32 softmax over the vocabulary sums to 1 within its sum's n roundings plus one for
    # each exp and each quotient, at most u each (2 n u: 1.2e-4 for n = 1000); an unnormalised
    # or wrong-axis softmax exceeds 1 by far more.
    vocab = loaded.config.model.vocab_size
    for candidates in fillers:
        probabilities = [p for _, p in candidates]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 2 * vocab * tolerances.F32
    # The language matters: the same text read as code gives other probabilities. Were it
    # ignored, both calls would run one program on the same inputs and give bitwise equal
    # probabilities; np.allclose (rtol 1e-5, > 100 float32 roundoffs) also counts a
    # rounding-level difference as equal.
    as_code = fill_mask(loaded, "Return the <mask> of the <mask>.", top_k=4, language="code")
    assert not np.allclose([p for _, p in fillers[0]], [p for _, p in as_code[0]])
    with pytest.raises(ValueError, match="no <mask>"):
        fill_mask(loaded, "Return the value.")
    with pytest.raises(ValueError, match="'fr' is not one of"):
        fill_mask(loaded, "Return the <mask>.", language="fr")


def test_cli_prints_k_candidates_per_mask(xlm_workdir, tiny_run):
    result = tiny_run(xlm_workdir, "--text=Return the <mask> of the <mask>.", "--top_k=3",
                      command="fill-mask")
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["<mask> 1", "<mask> 2"]
    assert all(line.count(" | ") == 2 for line in lines), lines
    missing = tiny_run(xlm_workdir, "--text=Return the value.", command="fill-mask",
                       check=False)
    assert missing.returncode == 1 and "has no <mask>" in missing.stderr


def test_the_api_fills_masks_from_a_workdir_and_refuses_to_generate_with_an_encoder(
        xlm_workdir, tiny_run):
    assert textgen_jax.fill_mask(str(xlm_workdir), "Return the <mask>.", top_k=2) == fill_mask(
        textgen_jax.load(str(xlm_workdir)), "Return the <mask>.", top_k=2)
    with pytest.raises(ValueError, match=r"arch='xlm' \(causal=False\) is an encoder .* "
                                         "use fill-mask"):
        textgen_jax.generate(str(xlm_workdir), "Return the")
    refused = tiny_run(xlm_workdir, "--prompt=Return the", command="generate", check=False)
    assert refused.returncode == 1 and "is an encoder with no next-token head" in refused.stderr


def test_bert_is_framed_with_cls_and_sep_and_a_decoder_is_refused(stdlib_tokenizer):
    import jax

    from textgen_jax.api import Loaded
    from textgen_jax.config import base_config
    from textgen_jax.models import build_model

    config = base_config()
    config.model.arch = "bert"
    config.model.num_layers, config.model.d_model, config.model.d_ff = 1, 32, 64
    model = build_model(config.model, stdlib_tokenizer.vocab_size)
    params = model.init(jax.random.key(0), model.example_batch(8))["params"]
    loaded = Loaded(model, params, stdlib_tokenizer, config)
    fillers = fill_mask(loaded, "Return <mask>.", top_k=2)
    assert len(fillers) == 1 and len(fillers[0]) == 2

    config.model.arch = "gpt2"
    gpt2 = build_model(config.model, stdlib_tokenizer.vocab_size)
    gpt2_params = gpt2.init(jax.random.key(0), gpt2.example_batch(8))["params"]
    with pytest.raises(ValueError, match="has no masked-LM head"):
        fill_mask(Loaded(gpt2, gpt2_params, stdlib_tokenizer, config), "Return <mask>.")
