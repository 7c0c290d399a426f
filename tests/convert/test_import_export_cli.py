"""`textgen-jax import-hf` makes a workdir that eval, generate and train use; `export-hf` writes
it back for `from_pretrained`. A tiny random GPT-2 with its own byte-level BPE tokenizer.json."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import tokenizers
import torch
import transformers

import tolerances
from conftest import REPO, cli_command, cli_env, read_metrics
from textgen_jax.data.corpus import prepared_stdlib_docstrings


def _cli(command: str, workdir, *flags: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cli_command(command, workdir, *flags), env=cli_env(1),
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"textgen-jax {command} failed:\n{result.stderr[-4000:]}")
    return result


def _byte_level_bpe(stdlib_data_dir: str):
    source = prepared_stdlib_docstrings("documents", stdlib_data_dir).as_data_source("train")
    texts = [source[i]["text"].decode() for i in range(300)]
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, tokenizers.trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    return tokenizer


@pytest.fixture(scope="module")
def hf_gpt2(stdlib_data_dir, tmp_path_factory):
    """(directory, model, tokenizer) of a random GPT-2 saved as transformers saves one."""
    tokenizer = _byte_level_bpe(stdlib_data_dir)
    eos = tokenizer.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_positions=64, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=eos, eos_token_id=eos)).eval()
    with torch.no_grad():  # weights large enough that greedy choices are far from ties
        for tensor in model.parameters():
            tensor.mul_(4.0)
    directory = tmp_path_factory.mktemp("hf_gpt2")
    model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory, model, tokenizer


def test_import_generate_train_and_export(hf_gpt2, stdlib_data_dir, tmp_path):
    directory, hf_model, tokenizer = hf_gpt2
    workdir = tmp_path / "imported"
    imported = _cli("import-hf", workdir, str(directory))
    assert "imported gpt2" in imported.stdout
    assert "newly initialised" not in imported.stdout and "dropped" not in imported.stdout

    # 20 greedy tokens: the same as transformers' generate with the same weights.
    import textgen_jax
    prompt = "Return the list of"
    ours = textgen_jax.generate(textgen_jax.load(str(workdir)), [prompt], max_new_tokens=20,
                                temperature=0.0)[0]
    eos = tokenizer.token_to_id("<|endoftext|>")
    ids = torch.tensor([[eos] + tokenizer.encode(prompt).ids])
    with torch.no_grad():
        out = hf_model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=eos)
    new = out[0, ids.shape[1]:].tolist()
    if eos in new:
        new = new[:new.index(eos)]
    assert len(new) >= 5
    assert ours == prompt + tokenizer.decode(new)

    # Train it further through the same loop, from its own config; it starts at the imported
    # params (the step-0 eval of the loop) and writes full checkpoints from there.
    config = ("--config", f"configs/workdir.py:{workdir}")
    _cli("train", workdir, *config, f"--config.data.data_dir={stdlib_data_dir}",
         "--config.data.seq_len=32", "--config.data.global_batch_size=4",
         "--config.train.num_steps=4", "--config.train.eval_every=4",
         "--config.train.eval_batches=2", "--config.train.checkpoint_every=4",
         "--config.sample.prompts=()")
    assert (workdir / "checkpoints" / "4" / "opt_state").is_dir()
    train = read_metrics(workdir, "train")
    assert all(np.isfinite(record["loss"]) for record in train.values())

    # Export the trained params: transformers loads them, with the tokenizer beside them.
    out = tmp_path / "exported"
    _cli("export-hf", workdir, f"--out={out}")
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == eos
    assert (out / "tokenizer.json").read_bytes() == (directory / "tokenizer.json").read_bytes()
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    loaded = textgen_jax.load(str(workdir))
    tokens = np.asarray([[eos] + tokenizer.encode("Open the file and read it.").ids])
    with torch.no_grad():
        theirs = reloaded(torch.from_numpy(tokens)).logits.numpy()
        before = hf_model(torch.from_numpy(tokens)).logits.numpy()
    ours_logits = np.asarray(loaded.model.apply({"params": loaded.params},
                                                {"inputs": tokens})["logits"])
    # PyTorch's kernels and XLA's sum in their own orders: float32, 2 layers whose longest
    # reduction is the MLP's 256, relative to the logits' scale.
    atol = tolerances.network(layers=2, width=256) * np.abs(ours_logits).max()
    np.testing.assert_allclose(theirs, ours_logits, atol=atol, rtol=0)
    assert np.abs(theirs - before).max() > 10 * atol, "the exported params are the trained ones"


def _import_error(src, workdir, **options) -> str:
    """The one-line message of import_to_workdir's error (what the CLI prints), in process."""
    from textgen_jax.convert.workdir import import_to_workdir
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        import_to_workdir(src, workdir, log=lambda line: None, **options)
    assert not (workdir / "checkpoints").exists()
    return str(error.value)


def test_bad_checkpoints_are_named(hf_gpt2, tmp_path):
    directory, hf_model, _ = hf_gpt2

    def checkpoint_dir(name: str, weights=None, config: dict | None = None, pickle=False):
        path = tmp_path / name
        path.mkdir()
        if weights is not None:
            if pickle:
                torch.save(weights.state_dict(), path / "pytorch_model.bin")
            else:
                weights.save_pretrained(path)
        hf_config = json.loads((directory / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**hf_config, **(config or {})}))
        (path / "tokenizer.json").write_bytes((directory / "tokenizer.json").read_bytes())
        return path

    # Through the CLI once: the one-line error and exit status 1.
    unknown = checkpoint_dir("t5", config={"model_type": "t5"})
    run = _cli("import-hf", tmp_path / "w1", str(unknown), check=False)
    assert run.returncode == 1
    message = run.stderr.strip().splitlines()[-1]
    assert "model_type='t5'" in message and "bart, bert, gpt2, openai-gpt, xlm" in message

    # A config.json that does not describe the weights: the tensor is named.
    wrong = checkpoint_dir("wrong", hf_model, {"n_embd": 32, "n_head": 2})
    message = _import_error(wrong, tmp_path / "w2")
    assert "transformer.wte.weight" in message and "(400, 64)" in message, message

    # Weights of another architecture under a gpt2 config.json: the first missing tensor named.
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64))
    message = _import_error(checkpoint_dir("bert_weights", bert), tmp_path / "w3")
    assert "no tensor transformer.wte.weight" in message and "model_type 'gpt2'" in message

    # A pickle only when allowed.
    pickled = checkpoint_dir("pickled", hf_model, pickle=True)
    assert "--allow-pickle" in _import_error(pickled, tmp_path / "w4")
    from textgen_jax.convert.workdir import import_to_workdir
    import_to_workdir(pickled, tmp_path / "w5", allow_pickle=True, log=lambda line: None)
    assert (tmp_path / "w5" / "checkpoints" / "0").is_dir()

    # No tokenizer.json: the fix is named.
    no_tokenizer = checkpoint_dir("no_tokenizer", hf_model)
    (no_tokenizer / "tokenizer.json").unlink()
    assert "--tokenizer" in _import_error(no_tokenizer, tmp_path / "w6")


def _gpt1_tokenizer():
    """GPT-1's tokenizer.json as transformers saves OpenAIGPTTokenizer's: lower-cased BERT
    pre-tokenization, a BPE with '</w>' word ends, and '<unk>' its only special token."""
    letters = list("abcdefghijklmnopqrstuvwxyz.,")
    vocab = {"<unk>": 0}
    vocab.update({piece: len(vocab) + i for i, piece in enumerate(letters)})
    vocab.update({f"{piece}</w>": len(vocab) + i for i, piece in enumerate(letters)})
    merges = [("t", "h"), ("th", "e</w>"), ("r", "e"), ("o", "f</w>"), ("i", "n"), ("a", "n"),
              ("l", "i"), ("n", "a"), ("e", "s</w>")]
    vocab.update({a + b: len(vocab) + i for i, (a, b) in enumerate(merges)})
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(
        vocab, merges, unk_token="<unk>", end_of_word_suffix="</w>"))
    tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = tokenizers.decoders.BPEDecoder(suffix="</w>")
    tokenizer.add_special_tokens(["<unk>"])
    return tokenizer


def test_gpt1_with_its_unk_only_tokenizer_imports_and_generates_as_transformers(tmp_path):
    """GPT-1's own tokenizer has no pad, bos or eos: the import reports each role's stand-in,
    and greedy generation (no eos: max_new_tokens) equals transformers' from the same ids."""
    tokenizer = _gpt1_tokenizer()
    torch.manual_seed(0)
    hf_model = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        vocab_size=tokenizer.get_vocab_size(), n_positions=64, n_embd=64, n_layer=2,
        n_head=4)).eval()
    with torch.no_grad():  # random enough that greedy choices vary and are far from ties
        for name, tensor in hf_model.named_parameters():
            scale = 0.5 if "embed" in name else 0.1 if name.endswith("bias") else 0.15
            if "ln_" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * torch.randn_like(tensor))
            else:
                tensor.copy_(scale * torch.randn_like(tensor))
    directory = tmp_path / "openai_gpt"
    hf_model.save_pretrained(directory)
    tokenizer.save(str(directory / "tokenizer.json"))
    workdir = tmp_path / "imported"
    imported = _cli("import-hf", workdir, str(directory))
    for role in ("pad", "bos", "eos"):
        assert f"the tokenizer has no {role} token" in imported.stdout, imported.stdout

    import textgen_jax
    prompt = "Return the list of names."
    ours = textgen_jax.generate(textgen_jax.load(str(workdir)), [prompt], max_new_tokens=12,
                                temperature=0.0)[0]
    ids = torch.tensor([tokenizer.encode(prompt).ids])  # no start token, as GPT-1 was fed
    assert 0 not in ids[0].tolist()  # the prompt is spelled without <unk>
    with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                do_sample=False)
    new = out[0, ids.shape[1]:].tolist()
    assert len(new) == 12 and len(set(new)) > 1
    assert ours == tokenizer.decode(ids[0].tolist() + new, skip_special_tokens=False)
