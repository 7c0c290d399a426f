"""BART: exact against Hugging Face's BartForConditionalGeneration, causal decoder,
bidirectional encoder, padding-safe."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.models.bart import Bart
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.training import partitioning

VOCAB = 101


def _init_shapes(model: Bart) -> dict:
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), *model.example_inputs(8))["params"]))


def _hf_params(hf_model, num_heads: int) -> dict:
    """Hugging Face BART weights (torch Linear weights are [out, in]) in our layout."""
    state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    d_model = state["model.shared.weight"].shape[1]
    head_dim = d_model // num_heads

    def dense(prefix: str, in_shape: tuple, out_shape: tuple) -> dict:
        return {"kernel": state[f"{prefix}.weight"].T.reshape(*in_shape, *out_shape),
                "bias": state[f"{prefix}.bias"].reshape(out_shape)}

    def norm(prefix: str) -> dict:
        return {"scale": state[f"{prefix}.weight"], "bias": state[f"{prefix}.bias"]}

    def attention(prefix: str) -> dict:
        heads = {ours: dense(f"{prefix}.{theirs}_proj", (d_model,), (num_heads, head_dim))
                 for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"))}
        heads["out"] = dense(f"{prefix}.out_proj", (num_heads, head_dim), (d_model,))
        return heads

    def stack(prefix: str, is_decoder: bool) -> dict:
        params = {"position_embed": {"embedding": state[f"{prefix}.embed_positions.weight"]},
                  "embed_norm": norm(f"{prefix}.layernorm_embedding")}
        num_layers = len({k.split(".")[3] for k in state if k.startswith(f"{prefix}.layers.")})
        for i in range(num_layers):
            p = f"{prefix}.layers.{i}"
            block = {"attention": attention(f"{p}.self_attn"),
                     "attention_norm": norm(f"{p}.self_attn_layer_norm"),
                     "mlp": {"fc_in": dense(f"{p}.fc1", (d_model,), (-1,)),
                             "fc_out": dense(f"{p}.fc2", (-1,), (d_model,))},
                     "mlp_norm": norm(f"{p}.final_layer_norm")}
            if is_decoder:
                block["cross_attention"] = attention(f"{p}.encoder_attn")
                block["cross_attention_norm"] = norm(f"{p}.encoder_attn_layer_norm")
            params[f"block_{i}"] = block
        return params

    return {"token_embed": {"embedding": state["model.shared.weight"]},
            "encoder": stack("model.encoder", is_decoder=False),
            "decoder": stack("model.decoder", is_decoder=True),
            "final_logits_bias": state["final_logits_bias"].reshape(-1)}


@pytest.mark.parametrize(
    "encoder_layers,decoder_layers,d_model,num_heads,d_ff,max_len,scale_embedding", [
        (2, 2, 64, 4, 128, 48, False),
        # Different depths, odd head count, max positions not a power of two, scaled embeddings.
        (3, 1, 60, 5, 100, 37, True),
    ])
def test_logits_match_transformers_bart_for_conditional_generation(
        encoder_layers, decoder_layers, d_model, num_heads, d_ff, max_len, scale_embedding):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.BartConfig(
        vocab_size=VOCAB, d_model=d_model, encoder_layers=encoder_layers,
        decoder_layers=decoder_layers, encoder_attention_heads=num_heads,
        decoder_attention_heads=num_heads, encoder_ffn_dim=d_ff, decoder_ffn_dim=d_ff,
        max_position_embeddings=max_len, activation_function="gelu", dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, scale_embedding=scale_embedding)
    torch.manual_seed(0)
    hf_model = transformers.BartForConditionalGeneration(hf_config).eval()
    # HF initialises biases (and final_logits_bias) to 0 and LayerNorms to 1, where a mapping
    # mistake would hide: randomise every tensor, with weights large enough for sharp attention.
    with torch.no_grad():
        for name, tensor in hf_model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                tensor.copy_((1.0 if name.endswith("weight") else 0.0)
                             + 0.2 * torch.randn_like(tensor))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif "embed" in name or "shared" in name:
                tensor.copy_(0.5 * torch.randn_like(tensor))
            else:
                tensor.copy_(0.15 * torch.randn_like(tensor))
        hf_model.final_logits_bias.copy_(0.5 * torch.randn_like(hf_model.final_logits_bias))
    rng = np.random.default_rng(0)
    source_len, target_len = max_len, max_len - 5
    inputs = rng.integers(0, VOCAB, size=(3, source_len)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(3, target_len)).astype(np.int32)
    source_mask = np.ones_like(inputs)
    source_mask[1, -7:] = 0  # trailing padding in one row, a different amount in another
    source_mask[2, source_len // 2:] = 0
    target_mask = np.ones_like(decoder_inputs)
    target_mask[2, -4:] = 0
    with torch.no_grad():
        expected = hf_model(input_ids=torch.from_numpy(inputs).long(),
                            attention_mask=torch.from_numpy(source_mask).long(),
                            decoder_input_ids=torch.from_numpy(decoder_inputs).long(),
                            decoder_attention_mask=torch.from_numpy(target_mask).long(),
                            ).logits.numpy()

    cfg = TransformerConfig(vocab_size=VOCAB, num_layers=encoder_layers, d_model=d_model,
                            num_heads=num_heads, d_ff=d_ff, max_len=max_len, activation="gelu")
    model = Bart(cfg, num_decoder_layers=decoder_layers, scale_embedding=scale_embedding)
    params = _hf_params(hf_model, num_heads)
    initialised = _init_shapes(model)
    # Same tree and shapes as our own init: no parameter of ours is left without a counterpart.
    assert jax.tree.structure(params) == jax.tree.structure(initialised)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, initialised)

    logits = np.asarray(model.apply({"params": params}, jnp.asarray(inputs),
                                    jnp.asarray(decoder_inputs),
                                    input_ids_mask=jnp.asarray(source_mask),
                                    decoder_mask=jnp.asarray(target_mask)))
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    assert np.abs(expected).max() > 1.0
    # Padding targets are nobody's prediction; every real target position must agree.
    real = target_mask == 1
    error = np.abs(logits[real] - expected[real]).max()
    print(f"max abs difference: {error:.2e}")
    assert error < 1e-4, error

    # encode once, then decode: the same logits as the one-call path.
    encoded = model.apply({"params": params}, jnp.asarray(inputs), jnp.asarray(source_mask),
                          method=Bart.encode)
    decoded = model.apply({"params": params}, jnp.asarray(decoder_inputs), encoded,
                          jnp.asarray(source_mask), jnp.asarray(target_mask), method=Bart.decode)
    np.testing.assert_allclose(np.asarray(decoded), logits, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def tiny():
    """Jitted apply of a tiny BART with weights (std 0.3) that make attention sharp."""
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32, activation="gelu"))
    rng = np.random.default_rng(0)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.3 * noise)
    params = jax.tree_util.tree_map_with_path(draw, _init_shapes(model))
    apply = jax.jit(lambda inputs, decoder_inputs, source_mask: model.apply(
        {"params": params}, inputs, decoder_inputs, input_ids_mask=source_mask))
    return lambda inputs, decoder_inputs, source_mask: np.asarray(
        apply(inputs, decoder_inputs, source_mask))


def test_decoder_is_causal(tiny):
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, VOCAB, size=(2, 16)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(2, 12)).astype(np.int32)
    changed = decoder_inputs.copy()
    changed[:, 8] = (decoder_inputs[:, 8] + 1) % VOCAB
    source_mask = np.ones_like(inputs)
    before = tiny(inputs, decoder_inputs, source_mask)
    after = tiny(inputs, changed, source_mask)
    np.testing.assert_array_equal(after[:, :8], before[:, :8])
    assert np.abs(after[:, 8] - before[:, 8]).max(-1).min() > 1e-2  # the check has teeth


def test_encoder_is_bidirectional(tiny):
    rng = np.random.default_rng(2)
    inputs = rng.integers(0, VOCAB, size=(2, 16)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(2, 12)).astype(np.int32)
    changed = inputs.copy()
    changed[:, -1] = (inputs[:, -1] + 1) % VOCAB
    source_mask = np.ones_like(inputs)
    before = tiny(inputs, decoder_inputs, source_mask)
    after = tiny(changed, decoder_inputs, source_mask)
    # The first target position sees the last source token.
    assert np.abs(after[:, 0] - before[:, 0]).max(-1).min() > 1e-2


def test_source_padding_never_changes_the_logits(tiny):
    rng = np.random.default_rng(3)
    source = rng.integers(0, VOCAB, size=(1, 10)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(2, 12)).astype(np.int32)
    alone = tiny(source, decoder_inputs[:1], np.ones_like(source))
    # The same 10 tokens followed by 6 pads of different contents in two rows.
    padded = np.concatenate([np.repeat(source, 2, 0),
                             rng.integers(0, VOCAB, size=(2, 6)).astype(np.int32)], axis=1)
    source_mask = np.array([[1] * 10 + [0] * 6] * 2, np.int32)
    decoder_inputs[1] = decoder_inputs[0]
    out = tiny(padded, decoder_inputs, source_mask)
    assert np.all(np.isfinite(out))
    for row in range(2):
        np.testing.assert_allclose(out[row], alone[0], atol=1e-5, rtol=0)
    # Without the padding mask the pads are seen: the check has teeth.
    leaky = tiny(padded, decoder_inputs, np.ones_like(source_mask))
    assert np.abs(leaky[0] - alone[0]).max() > 1e-2


def test_output_layer_is_tied_to_the_token_embeddings():
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32))
    shapes = _init_shapes(model)
    vocab_leaves = sorted(jax.tree_util.keystr(path) for path, leaf
                          in jax.tree_util.tree_flatten_with_path(shapes)[0]
                          if VOCAB in leaf.shape)
    # One vocabulary matrix shared by both stacks and the output layer, plus the logits bias.
    assert vocab_leaves == ["['final_logits_bias']", "['token_embed']['embedding']"]


def test_every_parameter_carries_logical_axis_names():
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32), num_decoder_layers=1)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.example_inputs(8)))
    specs = nn.get_partition_spec(boxed["params"])
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    leaves = jax.tree.leaves(nn.meta.unbox(boxed["params"]))
    assert len(flat_specs) == len(leaves)
    for (path, spec), leaf in zip(flat_specs, leaves):
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert len(spec) == leaf.ndim, (path, spec)
        names = [name for name in spec if name is not None]
        assert len(names) == leaf.ndim and len(set(names)) == len(names), (path, spec)
    mesh = jax.make_mesh((1, 1, 1), partitioning.MESH_AXES, devices=jax.devices()[:1])
    partitioning.logical_shardings(boxed["params"], mesh)
