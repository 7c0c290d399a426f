"""Blocks shared by the five architectures: dense, norms, embeddings, attention, MLP, block.

Every parameter is created through `nn.with_logical_partitioning` with names from
{batch, length, embed, heads, kv, mlp, vocab, layers}; training/partitioning.py maps them to
mesh axes. Parameters are float32; `dtype` is the compute dtype. The matmuls and the attention
kernel are the backend's (textgen_jax.ops): float32 accumulation everywhere, XLA:CPU's layouts
and gradients on CPU, plain dots XLA fuses on GPU and TPU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax import ops

Array = jax.Array
Initializer = Callable[..., Array]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The hyperparameters a transformer stack needs; built from `config.model`."""

    vocab_size: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    max_len: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    dtype: jnp.dtype = jnp.float32
    activation: str = "gelu_tanh"  # gelu_tanh (GPT, GPT-2) | gelu (BERT, XLM, BART)
    remat: str = "none"  # none | full | save_dots: what each block keeps for the backward pass
    scan_layers: bool = False  # one nn.scan over layer-stacked parameters (see layer_stack)
    attention: str = "auto"  # the attention kernel (ops.ATTENTION_CHOICES; auto: per backend)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def decoder(self, num_layers: int | None, num_heads: int | None,
                d_ff: int | None) -> "TransformerConfig":
        """An encoder-decoder's decoder stack: its own depth, heads and FFN width (None or 0:
        this config's), the rest shared."""
        return dataclasses.replace(self, num_layers=num_layers or self.num_layers,
                                   num_heads=num_heads or self.num_heads, d_ff=d_ff or self.d_ff)


def activation_fn(name: str) -> Callable[[Array], Array]:
    if name == "gelu_tanh":
        return functools.partial(jax.nn.gelu, approximate=True)
    if name == "gelu":
        return functools.partial(jax.nn.gelu, approximate=False)
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation {name!r}: use gelu_tanh, gelu or relu.")


# A variable collection of dense kernels transposed to [out..., in...], made for decoding's
# steps by `transposed_kernels` (a transform of the params) when the backend prefers it
# (ops.prefers_transposed_kernels); a DenseGeneral given its copy reads it instead.
DECODE_KERNELS = "decode_kernels"


def transposed_kernels(params: Any, run: Callable[[], Any]) -> dict:
    """The DECODE_KERNELS collection for `run`: the kernel [in..., out...] of every DenseGeneral
    that `run` (an apply of the model to `params`, e.g. one decoding step) calls, transposed
    to [out..., in...] at the same path. `run` is only traced abstractly to find them.
    `params` may be boxed (nn.LogicallyPartitioned, as `init` returns them)."""
    params = nn.meta.unbox(params)
    in_axes = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, DenseGeneral) and context.method_name == "__call__":
            in_axes[context.module.path] = context.module.in_axes
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(run)
    kernels: dict = {}
    for path, axes in in_axes.items():
        kernel, node = params, kernels
        for name in path:
            kernel, node = kernel[name], node.setdefault(name, {})
        # The barrier keeps XLA from giving the copy the kernel's own memory layout.
        node["kernel"] = jax.lax.optimization_barrier(
            jnp.moveaxis(kernel["kernel"], tuple(range(axes)), tuple(range(-axes, 0))))
    return kernels


class DenseGeneral(nn.Module):
    """A dense layer over the last `in_axes` input axes producing `features` output axes."""

    features: int | tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    in_axes: int = 1
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        shape = x.shape[x.ndim - self.in_axes:] + features
        if self.has_variable(DECODE_KERNELS, "kernel"):
            y = ops.matmul(x.astype(self.dtype), self.get_variable(DECODE_KERNELS, "kernel"),
                           self.in_axes, kernel_transposed=True)
        else:
            kernel = self.param(
                "kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                shape, jnp.float32)
            y = ops.matmul(x.astype(self.dtype), kernel, self.in_axes)
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                     self.kernel_axes[self.in_axes:]),
                features, jnp.float32)
            y = ops.add_bias(y, bias)
        return y


class LayerNorm(nn.Module):
    """LayerNorm computed in float32, returned in the compute dtype."""

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), jnp.float32)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                          (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


class Embed(nn.Module):
    """A lookup table [num_embeddings, d_model]; `attend` gives tied output logits."""

    num_embeddings: int
    features: int
    table_axes: tuple[str | None, str | None] = ("vocab", "embed")
    init_std: float = 0.02
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_std), self.table_axes),
            (self.num_embeddings, self.features), jnp.float32)

    def __call__(self, ids: Array) -> Array:
        """ids [...] -> [..., features]."""
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:
        """x [..., features] -> float32 logits [..., num_embeddings] (tied output layer)."""
        return ops.matmul(x.astype(self.dtype), self.embedding, kernel_transposed=True,
                          out_dtype=jnp.float32)


def attention_mask(query_segments: Array, key_segments: Array, causal: bool) -> Array:
    """Boolean mask [batch, 1, q_len, k_len]: True where a query may attend to a key.

    Segment ids are 0 for padding and equal for tokens of the same packed document, so
    packed documents never attend to each other and padding is never attended to.
    """
    mask = (query_segments[:, :, None] == key_segments[:, None, :]) & (key_segments[:, None, :] > 0)
    if causal:
        # Row order is time order, also inside a packed row.
        q_idx = jnp.arange(query_segments.shape[1])
        k_idx = jnp.arange(key_segments.shape[1])
        mask &= (q_idx[:, None] >= k_idx[None, :])[None]
    return mask[:, None]


def cached_attention_mask(module: nn.Module, segment_ids: Array) -> tuple[Array, Array]:
    """The decode-time self-attention mask of the tokens a call writes into the KV cache.

    `segment_ids` [batch, q_len] (0 = padding) belong to the next q_len cache slots; the cache
    keeps every slot's id (variable 'segment_ids' of the 'cache' collection, length = the
    length of the `init` call) so a query attends to the earlier-or-same slots of its segment.
    Returns the mask [batch, 1, q_len, cache_len] and the first slot written (a scalar). At
    `init` nothing is cached: the mask is the plain causal one and the first slot 0.
    """
    initialized = module.has_variable("cache", "segment_ids")
    cached = module.variable("cache", "segment_ids", jnp.zeros, segment_ids.shape, jnp.int32)
    index = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    if not initialized:
        return attention_mask(segment_ids, segment_ids, causal=True), jnp.zeros((), jnp.int32)
    start = index.value
    keys = jax.lax.dynamic_update_slice(cached.value, segment_ids.astype(jnp.int32), (0, start))
    cached.value = keys
    index.value = start + segment_ids.shape[1]
    query_slots = start + jnp.arange(segment_ids.shape[1])
    mask = ((segment_ids[:, :, None] == keys[:, None, :]) & (keys[:, None, :] > 0)
            & (query_slots[:, None] >= jnp.arange(keys.shape[1])[None, :])[None])
    return mask[:, None], start


def _fold_group(x: Array, group: int) -> Array:
    """[rows * group, heads, q_len, ...] -> [rows, heads, group * q_len, ...]: each group of
    consecutive rows becomes more queries of one row."""
    if group == 1:
        return x
    rows, heads = x.shape[0] // group, x.shape[1]
    x = jnp.swapaxes(x.reshape(rows, group, *x.shape[1:]), 1, 2)
    return x.reshape(rows, heads, group * x.shape[3], *x.shape[4:])


def _unfold_group(x: Array, group: int) -> Array:
    """The inverse of `_fold_group`: [rows, heads, group * q_len, ...] ->
    [rows * group, heads, q_len, ...]."""
    if group == 1:
        return x
    rows, heads = x.shape[:2]
    x = jnp.swapaxes(x.reshape(rows, heads, group, x.shape[2] // group, *x.shape[3:]), 1, 2)
    return x.reshape(rows * group, heads, *x.shape[3:])


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention; keys/values from `kv` (cross-attention) or x.

    With `decode=True` keys and values live in the 'cache' collection, [batch, heads,
    cache_len, kv], sized by the `init` call: self-attention writes each call's keys at the
    next slots and attends over the whole cache (the mask hides unwritten slots);
    cross-attention (`cross=True`) projects `kv` once, on the call that passes it, and later
    calls pass kv=None to reuse it. That cached source may hold fewer rows than x: each of its
    rows then serves a group of consecutive rows of x (beam search keeps one source per prompt
    for all its beams, and reads it once per step instead of once per beam).
    """

    cfg: TransformerConfig
    out_init_std: float = 0.02
    cross: bool = False

    @nn.compact
    def __call__(self, x: Array, mask: Array, kv: Array | None = None,
                 deterministic: bool = True, decode: bool = False) -> Array:
        """x [batch, q_len, embed], mask [batch, 1, q_len, k_len] -> [batch, q_len, embed]."""
        cfg = self.cfg
        proj = functools.partial(
            DenseGeneral, features=(cfg.num_heads, cfg.head_dim),
            kernel_axes=("embed", "heads", "kv"), dtype=cfg.dtype,
            kernel_init=nn.initializers.normal(cfg.init_std))
        query = proj(name="query")(x)
        query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
        # Heads lead ([batch, heads, length, kv]): ops.attention's layout (see there why).
        query = jnp.swapaxes(query, 1, 2)
        if kv is None and not (self.cross and decode):
            kv = x
        if kv is not None:
            key = nn.with_logical_constraint(proj(name="key")(kv),
                                             ("batch", "length", "heads", "kv"))
            value = nn.with_logical_constraint(proj(name="value")(kv),
                                               ("batch", "length", "heads", "kv"))
            key, value = jnp.swapaxes(key, 1, 2), jnp.swapaxes(value, 1, 2)
        if decode:
            key, value = self._cached(key if kv is not None else None,
                                      value if kv is not None else None)

        query = query / np.sqrt(cfg.head_dim).astype(cfg.dtype)
        group = query.shape[0] // key.shape[0]  # rows of x per row of keys (> 1: shared source)
        query, mask = _fold_group(query, group), _fold_group(mask, group)
        dropout = None
        if cfg.attention_dropout > 0 and not deterministic:
            dropout = functools.partial(nn.Dropout(cfg.attention_dropout), deterministic=False)
        out = _unfold_group(ops.attention(query, key, value, mask, choice=cfg.attention,
                                          dropout=dropout), group)
        out = jnp.swapaxes(out, 1, 2)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        return DenseGeneral(
            features=cfg.d_model, in_axes=2, kernel_axes=("heads", "kv", "embed"),
            dtype=cfg.dtype, kernel_init=nn.initializers.normal(self.out_init_std),
            name="out")(out)

    def _cached(self, key: Array | None, value: Array | None) -> tuple[Array, Array]:
        """The keys and values to attend over in decode mode, [batch, heads, cache_len, kv]."""
        initialized = self.has_variable("cache", "cached_key")
        cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape if key is not None
                                   else (), self.cfg.dtype)
        cached_value = self.variable("cache", "cached_value", jnp.zeros, cached_key.value.shape,
                                     self.cfg.dtype)
        if self.cross:  # the whole source at once; None = reuse it
            if key is not None:
                cached_key.value, cached_value.value = key, value
            return cached_key.value, cached_value.value
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if not initialized:  # init: the cache takes its length from this call; nothing cached
            return key, value
        start = (0, 0, index.value, 0)
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
        index.value = index.value + key.shape[2]
        return cached_key.value, cached_value.value


class MLP(nn.Module):
    """Position-wise feed-forward: dense(d_ff), activation, dense(d_model)."""

    cfg: TransformerConfig
    out_init_std: float = 0.02

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg = self.cfg
        h = DenseGeneral(cfg.d_ff, kernel_axes=("embed", "mlp"), dtype=cfg.dtype,
                         kernel_init=nn.initializers.normal(cfg.init_std), name="fc_in")(x)
        h = activation_fn(cfg.activation)(h)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return DenseGeneral(cfg.d_model, kernel_axes=("mlp", "embed"), dtype=cfg.dtype,
                            kernel_init=nn.initializers.normal(self.out_init_std),
                            name="fc_out")(h)


# config.model.remat -> jax.checkpoint policy: 'full' keeps only each block's input,
# 'save_dots' also keeps the matmul outputs (recomputes norms, activations, softmax).
REMAT_POLICIES = {"full": None,
                  "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class TransformerBlock(nn.Module):
    """Self-attention + MLP with residuals; pre-LN (GPT-2) or post-LN (GPT, BERT, XLM, BART).

    `residual_init_std` is the init std of the two projections that write into the residual
    stream (GPT-2 scales it by 1/sqrt(2 * num_layers), paper §2.3).
    """

    cfg: TransformerConfig
    pre_norm: bool
    residual_init_std: float = 0.02

    def __call__(self, x: Array, mask: Array, deterministic: bool = True,
                 decode: bool = False) -> Array:
        """x [batch, length, embed] -> same; `decode` runs the attention on its KV cache."""
        if self.cfg.remat == "none" or decode:
            return self.layer(x, mask, deterministic, decode)
        # Same parameters; the backward pass recomputes what the policy did not keep.
        return nn.remat(TransformerBlock.layer, policy=REMAT_POLICIES[self.cfg.remat],
                        static_argnums=(3, 4))(self, x, mask, deterministic, decode)

    @nn.compact
    def layer(self, x: Array, mask: Array, deterministic: bool, decode: bool) -> Array:
        cfg = self.cfg
        dropout = functools.partial(nn.Dropout(cfg.dropout), deterministic=deterministic)
        norm = functools.partial(LayerNorm, eps=cfg.layer_norm_eps, dtype=cfg.dtype)
        attention = MultiHeadAttention(cfg, out_init_std=self.residual_init_std, name="attention")
        mlp = MLP(cfg, out_init_std=self.residual_init_std, name="mlp")
        if self.pre_norm:
            x = x + dropout(attention(norm(name="attention_norm")(x), mask,
                                      deterministic=deterministic, decode=decode))
            x = x + dropout(mlp(norm(name="mlp_norm")(x), deterministic=deterministic))
        else:
            x = norm(name="attention_norm")(x + dropout(
                attention(x, mask, deterministic=deterministic, decode=decode)))
            x = norm(name="mlp_norm")(x + dropout(mlp(x, deterministic=deterministic)))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


# The parameter subtree of a scanned stack, and the prefix of an unrolled stack's blocks.
SCANNED_BLOCKS = "blocks"
BLOCK_PREFIX = "block_"


def layer_stack(block: type[nn.Module], num_layers: int, scan: bool,
                **block_fields) -> Callable[..., Array]:
    """The `num_layers` blocks of a stack as one function (x, *shared) -> x, to call inside the
    caller's compact method (the blocks are its submodules).

    x [batch, length, embed] is threaded through the blocks; `shared` (masks, the encoder's
    output, the deterministic and decode flags) go unchanged to every block, positionally.
    Unrolled (`scan=False`): submodules block_0 ... block_{n-1}, one parameter subtree each.
    Scanned (config.model.scan_layers): one submodule 'blocks' applied by `nn.scan`, every
    parameter stacked on a leading 'layers' axis [num_layers, ...], so the block is traced and
    compiled once whatever the depth (as MaxText). A block's own remat applies inside the scan.
    `unstack_layers` and `stack_layers` convert between the two parameter trees.
    """
    if not scan:
        blocks = [block(name=f"{BLOCK_PREFIX}{i}", **block_fields) for i in range(num_layers)]

        def unrolled(x: Array, *shared) -> Array:
            for layer in blocks:
                x = layer(x, *shared)
            return x
        return unrolled
    scanned = nn.scan(_scan_body(block), variable_axes={"params": 0},
                      split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast,
                      length=num_layers, metadata_params={nn.PARTITION_NAME: "layers"})(
        name=SCANNED_BLOCKS, **block_fields)
    return lambda x, *shared: scanned(x, *shared)[0]


@functools.cache
def _scan_body(block: type[nn.Module]) -> type[nn.Module]:
    """`block` as nn.scan's body: (carry, *broadcast) -> (carry, no per-layer output)."""
    def __call__(self, x: Array, *shared) -> tuple[Array, None]:
        return block.__call__(self, x, *shared), None
    return type(f"Scanned{block.__name__}", (block,), {"__call__": __call__})


def unstack_layers(params: Any) -> Any:
    """The per-layer view of a parameter tree: every scanned 'blocks' subtree (leaves
    [num_layers, ...]) becomes block_0 ... block_{n-1} (leaves [...]); the rest is kept.

    The layout decoding (KV cache), the Hugging Face tables and init_from read; a tree without
    scanned stacks is returned as is.
    """
    if not isinstance(params, Mapping):
        return params
    out = {}
    for key, value in params.items():
        if key == SCANNED_BLOCKS:
            num_layers = jax.tree.leaves(value)[0].shape[0]
            for i in range(num_layers):
                out[f"{BLOCK_PREFIX}{i}"] = jax.tree.map(lambda leaf, i=i: _layer(leaf, i), value)
        else:
            out[key] = unstack_layers(value)
    return out


def stack_layers(params: Any) -> Any:
    """The inverse of `unstack_layers`: block_0 ... block_{n-1} of every stack become one
    'blocks' subtree whose leaves are stacked on a new leading axis [num_layers, ...]."""
    if not isinstance(params, Mapping):
        return params
    blocks = sorted((key for key in params
                     if key.startswith(BLOCK_PREFIX) and key[len(BLOCK_PREFIX):].isdigit()),
                    key=lambda key: int(key[len(BLOCK_PREFIX):]))
    out = {key: stack_layers(value) for key, value in params.items() if key not in blocks}
    if blocks:
        out[SCANNED_BLOCKS] = jax.tree.map(lambda *layers: _stack(layers),
                                           *(params[key] for key in blocks))
    return out


def _layer(leaf: Any, i: int) -> Any:
    """Layer i of a stacked array (or of its ShapeDtypeStruct)."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
    return leaf[i]


def _stack(layers: Sequence[Any]) -> Any:
    """Per-layer arrays (numpy stays numpy; or their ShapeDtypeStructs) stacked on axis 0."""
    first = layers[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(layers), *first.shape), first.dtype)
    return (np.stack if isinstance(first, np.ndarray) else jnp.stack)(layers)


def unscanned(model: nn.Module, params: Any) -> tuple[nn.Module, Any]:
    """(model with its layers unrolled, params viewed per layer) for a scanned model; a model
    without scan_layers and its params unchanged. Decoding runs its KV cache this way."""
    if not model.cfg.scan_layers:
        return model, params
    return (model.clone(cfg=dataclasses.replace(model.cfg, scan_layers=False)),
            unstack_layers(params))
