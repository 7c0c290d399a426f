"""Hugging Face checkpoints in and out, with `transformers` (PyTorch, CPU) as the oracle.

Each case builds a tiny random `transformers` model, randomises every tensor (HF initialises
biases to 0 and LayerNorms to 1, where a mapping mistake would hide), saves it with
`save_pretrained`, imports the directory through `textgen_jax.convert.import_hf`, and compares
logits on batches with padding (and segment or language ids); then exports our params and
loads them back with `from_pretrained`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import tolerances
from textgen_jax import models
from textgen_jax.convert import export_hf, import_hf


# PyTorch's kernels (MKL, oneDNN) and XLA's sum in their own orders: float32, at most 4 layers
# (BART's 3 + 1) whose longest reduction is the MLP's <= 256, relative to each head's scale
# (6.1e-5). A mapping mistake (a transposed, swapped or missing tensor) moves the logits by a
# fraction of their scale, which is > 0.5 in every case.
TOLERANCE = tolerances.network(layers=4, width=256)
BATCH = 3


def _randomise(hf_model) -> None:
    with torch.no_grad():
        for name, tensor in hf_model.named_parameters():
            lowered = name.lower()
            if getattr(hf_model.config, "sinusoidal_embeddings", False) and \
                    "position_embeddings" in name:
                continue  # fixed sinusoids, not a parameter
            if ("layernorm" in lowered or "layer_norm" in lowered or ".ln_" in lowered) and \
                    name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * torch.randn_like(tensor))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif "embed" in lowered or "shared" in lowered or "wte" in lowered or \
                    "wpe" in lowered:
                tensor.copy_(0.5 * torch.randn_like(tensor))
            else:
                tensor.copy_(0.15 * torch.randn_like(tensor))
        if hasattr(hf_model, "final_logits_bias"):
            hf_model.final_logits_bias.copy_(0.5 * torch.randn_like(hf_model.final_logits_bias))


def _padding(length: int) -> np.ndarray:
    """1 real, 0 padding: a full row, 7 padded, half padded."""
    mask = np.ones((BATCH, length), np.int32)
    mask[1, -7:] = 0
    mask[2, length // 2:] = 0
    return mask


def _long(array: np.ndarray):
    return torch.from_numpy(np.asarray(array)).long()


# ---- one case per architecture: config, their logits, ours --------------------------------

def _decoder_case(hf_model, model, params, vocab, length):
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, vocab, (BATCH, length)).astype(np.int32)
    mask = _padding(length)
    with torch.no_grad():
        theirs = {"lm": hf_model(input_ids=_long(inputs), attention_mask=_long(mask)).logits.numpy()}
    ours = {"lm": np.asarray(model.apply({"params": params}, {
        "inputs": jnp.asarray(inputs), "segment_ids": jnp.asarray(mask)})["logits"])}
    return ours, theirs, mask


def _bert_case(hf_model, model, params, vocab, length):
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, vocab, (BATCH, length)).astype(np.int32)
    mask = _padding(length)
    token_types = np.zeros_like(inputs)
    token_types[:, length // 3:] = 1
    token_types[mask == 0] = 0
    with torch.no_grad():
        out = hf_model(input_ids=_long(inputs), token_type_ids=_long(token_types),
                       attention_mask=_long(mask))
    out_ours = model.apply({"params": params}, {"inputs": jnp.asarray(inputs),
                                                "token_types": jnp.asarray(token_types),
                                                "segment_ids": jnp.asarray(mask)})
    ours, theirs = {"mlm": np.asarray(out_ours["logits"])}, {}
    if hasattr(hf_model, "classifier") or hasattr(hf_model, "qa_outputs"):
        ours, theirs = _head_logits(hf_model, out, out_ours)
    elif hasattr(out, "prediction_logits"):
        theirs["mlm"] = out.prediction_logits.numpy()
        theirs["nsp"] = out.seq_relationship_logits.numpy()
        ours["nsp"] = np.asarray(out_ours["nsp_logits"])
    else:
        theirs["mlm"] = out.logits.numpy()
    return ours, theirs, mask


def _xlm_case(hf_model, model, params, vocab, length):
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, vocab, (BATCH, length)).astype(np.int32)
    mask = _padding(length)
    num_languages = hf_model.config.n_langs
    langs = rng.integers(0, num_languages, (BATCH, length)).astype(np.int32)
    with torch.no_grad():
        out = hf_model(input_ids=_long(inputs), attention_mask=_long(mask), langs=_long(langs))
    out_ours = model.apply({"params": params}, {"inputs": jnp.asarray(inputs),
                                                "langs": jnp.asarray(langs),
                                                "segment_ids": jnp.asarray(mask)})
    if set(out_ours) - {"logits"}:  # a fine-tuning head's outputs beside the LM logits
        return (*_head_logits(hf_model, out, out_ours), mask)
    return {"lm": np.asarray(out_ours["logits"])}, {"lm": out.logits.numpy()}, mask


def _head_logits(hf_model, out, out_ours) -> tuple[dict, dict]:
    """(ours, theirs) of a fine-tuning head: QA's start and end logits as [B, L, 2], or a
    classifier's logits (per token [B, L, labels], or per row)."""
    if hasattr(hf_model, "qa_outputs"):
        return ({"qa": np.stack([out_ours["start_logits"], out_ours["end_logits"]], -1)},
                {"qa": np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)})
    ours = out_ours["token_logits" if "token_logits" in out_ours else "classification_logits"]
    return {"classification": np.asarray(ours)}, {"classification": out.logits.numpy()}


def _bart_case(hf_model, model, params, vocab, length):
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, vocab, (BATCH, length)).astype(np.int32)
    decoder_inputs = rng.integers(0, vocab, (BATCH, length - 5)).astype(np.int32)
    source_mask, target_mask = _padding(length), _padding(length - 5)
    with torch.no_grad():
        theirs = {"lm": hf_model(input_ids=_long(inputs), attention_mask=_long(source_mask),
                                 decoder_input_ids=_long(decoder_inputs),
                                 decoder_attention_mask=_long(target_mask)).logits.numpy()}
    ours = {"lm": np.asarray(model.apply({"params": params}, {
        "inputs": jnp.asarray(inputs), "decoder_inputs": jnp.asarray(decoder_inputs),
        "segment_ids": jnp.asarray(source_mask),
        "decoder_segment_ids": jnp.asarray(target_mask)})["logits"])}
    return ours, theirs, target_mask


CASES = {
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=101, n_positions=48, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0)), _decoder_case, 101, 48),
    "gpt2_odd": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=97, n_positions=37, n_embd=60, n_layer=3, n_head=5, n_inner=100,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)), _decoder_case, 97, 37),
    "openai_gpt": (lambda: transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        vocab_size=101, n_positions=37, n_embd=48, n_layer=3, n_head=3, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0)), _decoder_case, 101, 37),
    "openai_gpt_double_heads": (lambda: transformers.OpenAIGPTDoubleHeadsModel(
        transformers.OpenAIGPTConfig(vocab_size=101, n_positions=48, n_embd=64, n_layer=2,
                                     n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
        _decoder_case, 101, 48),
    "bert_pretraining": (lambda: transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=97, hidden_size=60, num_hidden_layers=3, num_attention_heads=5,
        intermediate_size=100, max_position_embeddings=37, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)), _bert_case, 97, 37),
    "bert_masked_lm": (lambda: transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=101, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=48, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)), _bert_case, 101, 48),
    "bert_sequence_classification": (lambda: transformers.BertForSequenceClassification(
        transformers.BertConfig(vocab_size=101, hidden_size=64, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=128,
                                max_position_embeddings=48, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0, num_labels=3)),
        _bert_case, 101, 48),
    "bert_question_answering": (lambda: transformers.BertForQuestionAnswering(
        transformers.BertConfig(vocab_size=97, hidden_size=60, num_hidden_layers=2,
                                num_attention_heads=5, intermediate_size=100,
                                max_position_embeddings=37, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)), _bert_case, 97, 37),
    "xlm_token_classification": (lambda: transformers.XLMForTokenClassification(
        transformers.XLMConfig(vocab_size=101, emb_dim=64, n_layers=2, n_heads=4,
                               max_position_embeddings=48, n_langs=2, dropout=0.0,
                               attention_dropout=0.0, num_labels=5)), _xlm_case, 101, 48),
    "xlm_1_language": (lambda: transformers.XLMWithLMHeadModel(transformers.XLMConfig(
        vocab_size=101, emb_dim=64, n_layers=2, n_heads=4, max_position_embeddings=48,
        n_langs=1, dropout=0.0, attention_dropout=0.0)), _xlm_case, 101, 48),
    "xlm_3_languages_sinusoidal": (lambda: transformers.XLMWithLMHeadModel(transformers.XLMConfig(
        vocab_size=101, emb_dim=64, n_layers=2, n_heads=4, max_position_embeddings=48,
        n_langs=3, sinusoidal_embeddings=True, dropout=0.0, attention_dropout=0.0)),
        _xlm_case, 101, 48),
    "xlm_causal_odd": (lambda: transformers.XLMWithLMHeadModel(transformers.XLMConfig(
        vocab_size=97, emb_dim=60, n_layers=3, n_heads=5, max_position_embeddings=37,
        n_langs=2, causal=True, dropout=0.0, attention_dropout=0.0)), _xlm_case, 97, 37),
    "bart_3_1_odd": (lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=101, d_model=60, encoder_layers=3, decoder_layers=1,
        encoder_attention_heads=5, decoder_attention_heads=5, encoder_ffn_dim=100,
        decoder_ffn_dim=100, max_position_embeddings=37, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, scale_embedding=True)), _bart_case, 101, 37),
    # The decoder's own heads and FFN width (distilled summarisers vary them).
    "bart_asymmetric": (lambda: transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=101, d_model=32, encoder_layers=3, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=48,
        decoder_ffn_dim=40, max_position_embeddings=37, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0)), _bart_case, 101, 37),
}


def _max_errors(ours: dict, theirs: dict, mask: np.ndarray) -> dict[str, float]:
    errors = {}
    for head, expected in theirs.items():
        actual = ours[head]
        assert actual.shape == expected.shape, (head, actual.shape, expected.shape)
        # Padding positions are nobody's prediction; every real position must agree.
        rows = mask == 1 if actual.ndim == 3 else slice(None)
        scale = np.abs(expected[rows]).max()
        assert scale > 0.5, "logits too small to show a mapping error"
        errors[head] = float(np.abs(actual[rows] - expected[rows]).max() / scale)
    return errors


@pytest.mark.parametrize("name", sorted(CASES))
def test_import_then_export_matches_transformers(name, tmp_path):
    build, case, vocab, length = CASES[name]
    torch.manual_seed(0)
    hf_model = build().eval()
    _randomise(hf_model)
    hf_model.save_pretrained(tmp_path / "theirs")

    imported = import_hf(tmp_path / "theirs")
    model = models.build_model(imported.config.model, imported.config.model.vocab_size)
    shapes = models.param_shapes(model)
    missing = set(imported.missing)
    # Every parameter is imported, except the heads their class lacks, which are reported.
    mlm_head = {"mlm/transform/kernel", "mlm/transform/bias", "mlm/transform_norm/scale",
                "mlm/transform_norm/bias", "mlm/output_bias"}
    expected_missing = {
        "bert_masked_lm": {"pooler/kernel", "pooler/bias", "nsp/kernel", "nsp/bias"},
        "bert_sequence_classification": {"nsp/kernel", "nsp/bias", *mlm_head},
        "bert_question_answering": {"pooler/kernel", "pooler/bias", "nsp/kernel", "nsp/bias",
                                    *mlm_head},
        "xlm_token_classification": {"output_bias"},  # its LM head is not in the class
    }.get(name, set())
    assert missing == expected_missing
    expected_dropped = {"openai_gpt_double_heads": {"multiple_choice_head.summary.weight",
                                                    "multiple_choice_head.summary.bias"}}
    assert set(imported.dropped) == expected_dropped.get(name, set())
    params = _fill_missing(imported.params, shapes)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, shapes)

    ours, theirs, mask = case(hf_model, model, params, vocab, length)
    errors = _max_errors(ours, theirs, mask)
    print(f"{name}: max difference / logits' scale {errors}")
    assert max(errors.values()) <= TOLERANCE, errors

    # Export, then transformers loads it back: the same logits as the model we started from.
    export_hf(imported.config, params, tmp_path / "exported")
    reloaded = type(hf_model).from_pretrained(tmp_path / "exported").eval()
    if name == "openai_gpt_double_heads":  # the multiple-choice head is not ours to export
        reloaded = transformers.OpenAIGPTLMHeadModel.from_pretrained(tmp_path / "exported")
    _, exported_logits, _ = case(reloaded.eval(), model, params, vocab, length)
    # The same float32 weights in the same transformers model: bitwise on this machine, but a
    # BLAS (MKL) may sum in another order for other memory alignments, hence TOLERANCE.
    for head in theirs:
        if head in exported_logits and not (name == "bert_masked_lm" and head == "nsp"):
            np.testing.assert_allclose(exported_logits[head], theirs[head], rtol=0,
                                       atol=TOLERANCE * np.abs(theirs[head]).max(), err_msg=head)


def _fill_missing(params: dict, shapes: dict) -> dict:
    """`params` with zeros where the import had nothing (heads the checkpoint lacks)."""
    def fill(path, shape):
        node = params
        for key in path:
            node = node.get(key.key) if isinstance(node, dict) else None
            if node is None:
                return np.zeros(shape.shape, np.float32)
        return node
    return jax.tree_util.tree_map_with_path(fill, shapes)
