"""Generation with parameters sharded over a mesh of 8 (simulated) devices."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import flax.linen as nn
    import jax
    import ml_collections

    from textgen_jax.decoding import GenerationOptions, generate_ids
    from textgen_jax.models.gpt2 import GPT2
    from textgen_jax.models.layers import TransformerConfig
    from textgen_jax.training import partitioning

    assert jax.device_count() == 8
    model = GPT2(TransformerConfig(vocab_size=96, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32))
    boxed = model.init(jax.random.key(0), model.example_batch(8))["params"]
    params = jax.tree.map(lambda p: 8 * p, nn.meta.unbox(boxed))  # sharp: varied tokens
    mesh = partitioning.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=4, tensor=2)))
    sharded = jax.device_put(params, partitioning.logical_shardings(boxed, mesh))
    assert any(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(sharded))
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
    for options in (GenerationOptions(max_new_tokens=8),
                    GenerationOptions(max_new_tokens=8, num_beams=3)):
        args = dict(eos_id=97, pad_id=0)
        single = generate_ids(model, params, prompts, options, **args)
        with jax.set_mesh(mesh):
            assert generate_ids(model, sharded, prompts, options, **args) == single
    print("ok")
""")


def test_sharded_parameters_generate_what_one_device_does():
    from conftest import REPO, cli_env

    result = subprocess.run([sys.executable, "-c", SCRIPT], env=cli_env(num_devices=8),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
