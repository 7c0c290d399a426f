"""config.model.scan_layers: one nn.scan over layer-stacked parameters computes exactly what the
unrolled blocks compute, for all five architectures, trains the same, decodes through the
unrolled view, and its checkpoints export to Hugging Face and initialise unrolled models."""

from __future__ import annotations

import importlib.util

import flax.linen as nn
import jax
import numpy as np
import pytest

import tolerances
from conftest import REPO
from textgen_jax import models, objectives
from textgen_jax.decoding.generate import GenerationOptions, generate_ids
from textgen_jax.models.layers import stack_layers, unstack_layers
from textgen_jax.training import loop, optimizer, partitioning, steps

NUM_LAYERS = 3  # more than one, so a wrong layer order or stacking axis shows
BART_DECODER_LAYERS = 2
# Every architecture with one of the remat policies, which must compose with the scan.
REMAT = {"gpt2": "none", "gpt": "full", "bert": "save_dots", "xlm": "full", "bart": "save_dots"}


def tiny_config(arch: str, data_dir: str, tokenizer, scan_layers: bool):
    spec = importlib.util.spec_from_file_location("preset", REPO / "configs" / f"{arch}.py")
    preset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preset)
    config = preset.get_config("tiny")
    config.model.update(num_layers=NUM_LAYERS, d_model=32, num_heads=4, d_ff=64, max_len=64,
                        dtype="float32", remat=REMAT[arch], scan_layers=scan_layers,
                        # Dropout masks are drawn per layer by either layout, not the same ones.
                        dropout=0.0, attention_dropout=0.0)
    if arch == "bart":
        config.model.num_decoder_layers = BART_DECODER_LAYERS  # its own depth is stacked too
    config.data.update(data_dir=data_dir, seq_len=32, global_batch_size=4)
    config.optim.warmup_steps = 1
    loop.resolve_vocab_size(config, tokenizer.vocab_size)
    return config


def train_losses(config, params, batches) -> tuple[list[float], dict]:
    """The losses of a few real train steps from `params` on one device, and the final params."""
    model = models.build_model(config.model, config.model.vocab_size)
    tx = optimizer.make_optimizer(config.optim, len(batches))
    mesh = partitioning.make_mesh(config.mesh, jax.devices()[:1])
    _, _, shardings = steps.state_shardings(model, tx, config.data.seq_len, mesh)
    # A copy: the train step donates its state, and the caller's params live on.
    params = jax.device_put(jax.tree.map(np.array, params), shardings.params)
    state = steps.state_with_fresh_optimizer(0, params, tx, shardings)
    train_step = steps.jit_train_step(
        steps.make_train_step(model, objectives.pretraining_objective(config).loss_fn, tx),
        shardings, mesh)
    losses = []
    with steps.activate(mesh):
        for batch in batches:
            state, metrics = train_step(state, partitioning.global_batch(batch, mesh),
                                        jax.random.key(1))
            losses.append(float(metrics["loss"]))
    return losses, state.params


# The scanned stack is the unrolled blocks' function compiled as another program (XLA fuses the
# scan's body apart), so its sums run in other orders; the bounds are tests/tolerances.py's,
# for float32 and NUM_LAYERS blocks (BART: plus its decoder's). The forward outputs' longest
# reduction is the MLP's 64: 2.3e-5 of each output's scale (3.8e-5 for BART). At this init
# (std 0.02) a reversed layer order moves them by 2.6e-4 (BART) to 0.13 (GPT-2) of it.
@pytest.mark.parametrize("arch", ["gpt2", "gpt", "bert", "xlm", "bart"])
def test_scanned_stack_equals_unrolled_blocks(arch, stdlib_data_dir, stdlib_tokenizer):
    unrolled_config = tiny_config(arch, stdlib_data_dir, stdlib_tokenizer, scan_layers=False)
    scanned_config = tiny_config(arch, stdlib_data_dir, stdlib_tokenizer, scan_layers=True)
    unrolled = models.build_model(unrolled_config.model, unrolled_config.model.vocab_size)
    scanned = models.build_model(scanned_config.model, scanned_config.model.vocab_size)
    batch = unrolled.example_batch(16)
    params = nn.meta.unbox(unrolled.init(jax.random.key(0), batch)["params"])
    stacked = stack_layers(params)

    # The scanned model's own parameters have the stacked tree's shapes, with a leading
    # 'layers' axis on every block parameter, and unstack to the unrolled tree.
    boxed = jax.eval_shape(scanned.init, jax.random.key(0), batch)["params"]
    shapes = jax.tree.map(lambda leaf: leaf.shape, nn.meta.unbox(boxed))
    assert shapes == jax.tree.map(np.shape, stacked)
    block_names = [leaf.names for path, leaf in jax.tree_util.tree_leaves_with_path(
        boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        if any(getattr(key, "key", None) == "blocks" for key in path)]
    assert block_names and all(names[0] == "layers" for names in block_names)
    assert jax.tree.all(jax.tree.map(np.array_equal, unstack_layers(stacked), params))

    layers = NUM_LAYERS + (BART_DECODER_LAYERS if arch == "bart" else 0)
    expected = unrolled.apply({"params": params}, batch)
    actual = scanned.apply({"params": stacked}, batch)
    forward = tolerances.network(layers, width=64)
    for want, got in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
        np.testing.assert_allclose(got, want, rtol=0, atol=forward * np.abs(want).max())

    objective = objectives.pretraining_objective(unrolled_config)
    iterator = iter(objective.dataset(unrolled_config, stdlib_tokenizer, "train",
                                      process_index=0, process_count=1, shuffle=True,
                                      repeat=True))
    batches = [next(iterator) for _ in range(2)]
    unrolled_losses, unrolled_params = train_losses(unrolled_config, params, batches)
    scanned_losses, scanned_params = train_losses(scanned_config, stacked, batches)
    # A train step adds the softmax over the vocabulary and the sums over the batch's tokens:
    # the longest reduction is the vocabulary's (1000 here), for the loss and the gradients.
    step = tolerances.network(layers, width=unrolled_config.model.vocab_size)
    assert scanned_losses == pytest.approx(unrolled_losses, rel=step)
    # The first step's learning rate is 0 (warmup), so the parameters moved by the second
    # step's Adam update alone, whose normalised m / sqrt(v) carries the gradients' relative
    # error once from m and half again from v (and from both steps' gradients): at most 4
    # times it, tensor by tensor, against how far the parameters moved. A key bias moves by
    # noise alone, by at most lr (Adam with b1**2 < b2 moves an element by <= lr a step).
    lr = float(optimizer.learning_rate_schedule(unrolled_config.optim, len(batches))(1))
    tolerances.assert_same_updates(params, unrolled_params, unstack_layers(scanned_params),
                                   4 * step, lr)


# Greedy decoding for a decoder-only model, beam search (cache reordered) for BART.
@pytest.mark.parametrize("arch,num_beams", [("gpt2", 1), ("bart", 2)])
def test_scanned_model_generates_as_unrolled(arch, num_beams, stdlib_data_dir,
                                             stdlib_tokenizer):
    configs = [tiny_config(arch, stdlib_data_dir, stdlib_tokenizer, scan_layers=scan)
               for scan in (False, True)]
    unrolled, scanned = (models.build_model(c.model, c.model.vocab_size) for c in configs)
    params = nn.meta.unbox(unrolled.init(jax.random.key(0), unrolled.example_batch(8))[
        "params"])
    prompts = [[5, 6, 7, 8], [9, 10]]
    options = GenerationOptions(max_new_tokens=6, num_beams=num_beams)
    generate = lambda model, p: generate_ids(  # noqa: E731
        model, p, prompts, options, eos_id=stdlib_tokenizer.eos_id,
        pad_id=stdlib_tokenizer.pad_id)
    assert generate(scanned, stack_layers(params)) == generate(unrolled, params)


def test_scanned_checkpoint_exports_and_initialises_unrolled(tmp_path, tiny_run):
    import torch
    import transformers

    import textgen_jax
    from textgen_jax.config import ConfigError, base_config
    from textgen_jax.convert.workdir import export_workdir
    from textgen_jax.training import checkpoint, init_from

    workdir = tmp_path / "scanned"
    tiny_run(workdir, "--config.model.scan_layers=True", "--config.model.num_layers=3",
             "--config.train.num_steps=2", "--config.sample.prompts=()")
    loaded = textgen_jax.load(str(workdir))
    assert "blocks" in loaded.params and "block_0" not in loaded.params
    ids = np.array([[3, 14, 15, 92, 65, 35]], np.int32)
    ours = np.asarray(loaded.model.apply({"params": loaded.params}, {"inputs": ids})["logits"])

    export_workdir(workdir, tmp_path / "hf")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        their_logits = theirs(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    # PyTorch's kernels sum in their own orders: float32, 3 layers whose longest reduction is
    # the MLP's 128 (conftest.TINY_OVERRIDES), relative to the logits' scale.
    np.testing.assert_allclose(their_logits, ours, rtol=0, atol=tolerances.network(
        layers=3, width=128) * np.abs(ours).max())

    # An unrolled fine-tuning model starts from the scanned checkpoint, layer by layer.
    config = base_config()
    config.model.update(loaded.config.model.to_dict())
    config.model.scan_layers = False
    # Resuming the scanned checkpoints unrolled is a clear error, not a failed restore.
    with pytest.raises(ConfigError, match="scan_layers"):
        checkpoint.check_compatible(workdir, config)
    model = models.build_model(config.model, config.model.vocab_size)
    initialised = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), models.param_shapes(model))
    merged, new, dropped = init_from.merge_pretrained(config, initialised, str(workdir))
    assert not new and not dropped
    assert jax.tree.all(jax.tree.map(np.array_equal, merged,
                                     jax.tree.map(np.asarray, unstack_layers(loaded.params))))
