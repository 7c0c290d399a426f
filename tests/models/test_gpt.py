"""GPT: exact against Hugging Face's OpenAIGPTLMHeadModel, causal, packing-safe, trains via CLI."""

from __future__ import annotations

import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, cli_command, cli_env, read_metrics
from textgen_jax.models.gpt import GPT
from textgen_jax.models.layers import TransformerConfig

VOCAB = 101


def _init_shapes(model: GPT) -> dict:
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), *model.example_inputs(8))["params"]))


def _random_tokens(rng: np.random.Generator, *shape: int, vocab: int = VOCAB) -> np.ndarray:
    return rng.integers(0, vocab, size=shape).astype(np.int32)


@pytest.fixture(scope="module")
def tiny():
    """(params, jitted apply) of a tiny GPT with weights of std 0.3 (LayerNorm scales 1 + noise),
    large enough that attention is sharp and input-dependent: a leak between tokens that must
    not see each other moves the logits far beyond the tolerances below."""
    model = GPT(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                  d_ff=64, max_len=32))
    rng = np.random.default_rng(0)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.3 * noise)
    params = jax.tree_util.tree_map_with_path(draw, _init_shapes(model))
    apply = jax.jit(lambda params, inputs, segments, positions: model.apply(
        {"params": params}, inputs, segments, positions))
    return params, apply


def _hf_params(hf_model, num_layers: int, num_heads: int) -> dict:
    """Hugging Face OpenAI GPT weights (Conv1D kernels are [in, out]) in our parameter layout."""
    state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    d_model = state["transformer.tokens_embed.weight"].shape[1]
    head_dim = d_model // num_heads

    def dense(prefix: str, in_shape: tuple, out_shape: tuple) -> dict:
        return {"kernel": state[f"{prefix}.weight"].reshape(*in_shape, *out_shape),
                "bias": state[f"{prefix}.bias"].reshape(out_shape)}

    def norm(prefix: str) -> dict:
        return {"scale": state[f"{prefix}.weight"], "bias": state[f"{prefix}.bias"]}

    params = {"token_embed": {"embedding": state["transformer.tokens_embed.weight"]},
              "position_embed": {"embedding": state["transformer.positions_embed.weight"]}}
    for i in range(num_layers):
        p = f"transformer.h.{i}"
        qkv_kernel = np.split(state[f"{p}.attn.c_attn.weight"], 3, axis=1)
        qkv_bias = np.split(state[f"{p}.attn.c_attn.bias"], 3)
        attention = {name: {"kernel": k.reshape(d_model, num_heads, head_dim),
                            "bias": b.reshape(num_heads, head_dim)}
                     for name, k, b in zip(("query", "key", "value"), qkv_kernel, qkv_bias)}
        attention["out"] = dense(f"{p}.attn.c_proj", (num_heads, head_dim), (d_model,))
        params[f"block_{i}"] = {
            "attention": attention,
            "attention_norm": norm(f"{p}.ln_1"),
            "mlp": {"fc_in": dense(f"{p}.mlp.c_fc", (d_model,), (-1,)),
                    "fc_out": dense(f"{p}.mlp.c_proj", (-1,), (d_model,))},
            "mlp_norm": norm(f"{p}.ln_2"),
        }
    return params


@pytest.mark.parametrize("num_layers,d_model,num_heads,max_len,vocab", [
    (2, 64, 4, 48, 101),
    (3, 48, 3, 37, 97),  # odd head count, head_dim 16, positions not a power of two
])
def test_logits_match_transformers_openai_gpt(num_layers, d_model, num_heads, max_len, vocab):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # afn='gelu' is the tanh approximation in modeling_openai (ACT_FNS['gelu'] = gelu_new), as
    # in the original GPT code; n_ctx/d_ff are tied to n_positions/4*n_embd there.
    hf_config = transformers.OpenAIGPTConfig(
        n_layer=num_layers, n_embd=d_model, n_head=num_heads, n_positions=max_len,
        vocab_size=vocab, afn="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5)
    torch.manual_seed(0)
    hf_model = transformers.OpenAIGPTLMHeadModel(hf_config).eval()
    # HF initialises biases to 0 and LayerNorm to 1, where a mapping mistake would hide:
    # randomise every tensor, with weights large enough for sharp, input-dependent attention.
    with torch.no_grad():
        for name, tensor in hf_model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * torch.randn_like(tensor))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif "embed" in name:
                tensor.copy_(0.5 * torch.randn_like(tensor))
            else:
                tensor.copy_(0.15 * torch.randn_like(tensor))
    inputs = _random_tokens(np.random.default_rng(0), 2, max_len, vocab=vocab)
    with torch.no_grad():
        expected = hf_model(torch.from_numpy(inputs).long()).logits.numpy()

    model = GPT(TransformerConfig(vocab_size=vocab, num_layers=num_layers, d_model=d_model,
                                  num_heads=num_heads, d_ff=4 * d_model, max_len=max_len,
                                  layer_norm_eps=1e-5))
    initialised = _init_shapes(model)
    params = _hf_params(hf_model, num_layers, num_heads)
    # Same tree and shapes as our own init: no parameter of ours is left without a counterpart
    # (no final LayerNorm, no separate output projection: lm_head is tokens_embed in HF).
    assert jax.tree.structure(params) == jax.tree.structure(initialised)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, initialised)

    logits = np.asarray(model.apply({"params": params}, jnp.asarray(inputs)))
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_changing_a_future_token_never_changes_earlier_logits(tiny):
    params, apply = tiny
    inputs = _random_tokens(np.random.default_rng(1), 2, 16)
    segments = np.ones_like(inputs)
    positions = np.broadcast_to(np.arange(16, dtype=np.int32), inputs.shape)
    changed = inputs.copy()
    changed[:, 9] = (inputs[:, 9] + 1) % VOCAB
    before = np.asarray(apply(params, inputs, segments, positions))
    after = np.asarray(apply(params, changed, segments, positions))
    np.testing.assert_allclose(after[:, :9], before[:, :9], atol=1e-5, rtol=0)
    assert np.abs(after[:, 9:] - before[:, 9:]).max() > 1e-2  # the change itself is seen


def test_packed_documents_never_attend_to_each_other(tiny):
    params, apply = tiny
    rng = np.random.default_rng(2)
    first, second = _random_tokens(rng, 1, 6), _random_tokens(rng, 1, 10)
    packed = np.concatenate([first, second], axis=1)
    segments = np.array([[1] * 6 + [2] * 10], np.int32)
    positions = np.array([list(range(6)) + list(range(10))], np.int32)

    logits = np.asarray(apply(params, packed, segments, positions))
    alone = [np.asarray(apply(params, doc, np.ones_like(doc),
                              np.arange(doc.shape[1], dtype=np.int32)[None]))
             for doc in (first, second)]
    np.testing.assert_allclose(logits[:, :6], alone[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(logits[:, 6:], alone[1], atol=1e-5, rtol=0)

    # Without the segment ids the second document does see the first: the check has teeth.
    leaky = np.asarray(apply(params, packed, np.ones_like(segments), positions))
    assert np.abs(leaky[:, 6:] - alone[1]).max() > 1e-2


def test_tiny_pretrains_through_the_cli(tmp_path, tiny_run):
    workdir = tmp_path / "gpt_tiny"
    # 30 steps at the preset's lr (5e-4, tuned for 800) move the loss too little to assert on.
    tiny_run(workdir, "--config.train.num_steps=30", "--config.train.eval_every=30",
             "--config.train.checkpoint_every=30", "--config.optim.lr=1e-3",
             config="configs/gpt.py:tiny")
    evals = read_metrics(workdir, "eval")
    assert sorted(evals)[0] == 0 and sorted(evals)[-1] == 30, sorted(evals)
    assert evals[30]["loss"] < evals[0]["loss"] - 0.25, (evals[0]["loss"], evals[30]["loss"])

    result = subprocess.run(
        cli_command("generate", workdir, "--prompt=Return the", "--max_new_tokens=6",
                    "--temperature=0"),
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("Return the"), result.stdout
