"""Keras's attention layers: MultiHeadAttention, Attention (dot-product, Luong) and
AdditiveAttention (Bahdanau), over inputs of shape (None, steps, features).

Each is built from IR ops: matmul for the projections (MultiHeadAttention's EinsumDense kernels,
of Keras's shapes (features, heads, key_dim), viewed as matrices), batch_matmul for the scores and
the weighted sums per sample and head, softmax over the last axis, and a constant added to the
scores where a causal mask hides a step (Keras adds -1e9 there: the same softmax to the last bit).
Calls name their tensors as Keras saves them: MultiHeadAttention(query, value, key=...) with
value and key positional or by keyword (normalize.py keeps which); Attention([query, value, key]).
A keyword use_causal_mask is read, and MultiHeadAttention's attention_mask tensor (1 where a query
step may see a key step). return_attention_scores=True gives the layer a second output: the
attention weights (MultiHeadAttention's before dropout, [B, heads, Tq, Tk]; Attention's after it,
[B, Tq, Tk]), as each Keras returns them.

The masks of Embedding(mask_zero)/Masking (ctx.masks) are read as Keras reads them:
MultiHeadAttention ANDs the query's mask ([B, Tq, 1]), the value's and the key's ([B, 1, Tk]),
the attention_mask tensor and the causal mask into one mask; Keras 3 puts -1e9 in the hidden
scores (a where: a hidden score has no gradient; a query step that sees nothing attends to every
step alike, or with dropout or the scores returned, when Keras 3 runs its Softmax layer, to
none), tf-keras adds -1e9 to them. Keras 3 also deletes the masks of the tensors it reads as it
runs, so that a later reader of the same tensor sees none; kgraph keeps them, as tf-keras does. Attention and AdditiveAttention read the query's and the
value's masks only (the key's is ignored), subtract 1e9 from the hidden scores and zero the
output's masked query steps. Every one passes the query's mask on to its output."""

from __future__ import annotations

import math

from ir import BATCH

from .errors import ConfigError
from .initializers import parse_initializer
from .constraints import parse_constraint
from .regularizers import parse_regularizer
from .rule import Rule, WeightDecl, check_count, is_count, shape_str, where_of

NEG = -1e9  # what Keras adds to a masked score (float32)


def call_options(layer) -> tuple:
    """(names, options) of the layer's calls: each input's keyword (None: positional) and the
    call's other keyword arguments, the same for every call (a shared layer called two ways is
    refused)."""
    names = [tuple(n) for n in layer.call_names] or [()]
    options = layer.call_options or [{}]
    if any(n != names[0] for n in names) or any(o != options[0] for o in options):
        raise ConfigError(f"{where_of(layer)}: a shared layer called with different keyword arguments")
    return names[0], options[0]


def _check_options(layer, allowed=("use_causal_mask", "training", "return_attention_scores")) -> tuple:
    """(use_causal_mask, return_attention_scores) of the call; other options refused."""
    where = where_of(layer)
    names, options = call_options(layer)
    if "attention_mask" in names and layer.class_name != "MultiHeadAttention":
        raise ConfigError(f"{where}: an attention_mask tensor is not supported")
    for key, value in options.items():
        if key in ("query_mask", "value_mask", "key_mask", "attention_mask", "mask") and value is None:
            continue
        if key not in allowed:
            raise ConfigError(f"{where}: the call argument {key}={value!r} is not supported")
    causal = options.get("use_causal_mask", False) or layer.config.get("causal", False)
    scores = options.get("return_attention_scores", False)
    for key, value in (("use_causal_mask", causal), ("return_attention_scores", scores)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return causal, scores


def _check_dropout(layer) -> float:
    rate = layer.config.get("dropout", 0.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ConfigError(f"{where_of(layer)}: dropout must be in [0, 1), got {rate!r}")
    return float(rate)


def _sequences(layer, shapes, names) -> None:
    for shape, name in zip(shapes, names):
        if len(shape) != 3:
            raise ConfigError(
                f"{where_of(layer)}: its {name} has shape {shape_str(shape)}; kgraph supports (None, steps, features) only"
            )


def _causal_mask(g, tq, tk, dtype, name) -> str:
    """A [tq, tk] constant: 0 where query step i may see key step j (j <= i), -1e9 elsewhere."""
    values = [0.0 if j <= i else NEG for i in range(tq) for j in range(tk)]
    return g.constant(values=values, shape=(tq, tk), dtype=dtype, name=name)


def _step_mask(g, mask, axis, name):
    """A [B, T] 0/1 Keras mask as [B, T, 1] (axis 2: query steps) or [B, 1, T] (axis 1: key steps)."""
    t = g.type(mask).shape[1]
    return g.reshape(mask, shape=(BATCH, t, 1) if axis == 2 else (BATCH, 1, t), name=name)


def _and(g, a, b):
    """The AND of two 0/1 masks (either may be None), broadcast."""
    return b if a is None else a if b is None else g.mul(a, b)


def _attend(ctx, layer, scores, value, causal, rate, mask=None, where=False, zero_hidden=False):
    """softmax(scores, hidden where mask is 0 or causal hides) [dropout] @ value: the weighted sum
    of the value steps, and the weights before and after dropout. mask: 0/1, broadcast to
    [B, Tq, Tk] (the same for every head). Keras hides a score by adding -1e9 (where=False) or by
    putting -1e9 in its place (where=True: Keras 3's MultiHeadAttention; the hidden score then has
    no gradient, which differs from adding only in a row that hides every key step). zero_hidden:
    the weights of hidden scores set to 0 after the softmax (Keras 3's Softmax layer, so a row
    that hides every key step attends to none rather than to all alike)."""
    g = ctx.g
    t = g.type(scores)
    dtype = t.dtype
    if causal and mask is None:  # a constant added: no mask to combine with
        scores = g.add(
            scores,
            _causal_mask(g, t.shape[-2], t.shape[-1], dtype, f"{layer.name}_causal_mask"),
            name=f"{layer.name}_causal",
        )
    elif causal:
        keep = [1.0 if j <= i else 0.0 for i in range(t.shape[-2]) for j in range(t.shape[-1])]
        mask = g.mul(mask, g.constant(values=keep, shape=t.shape[-2:], dtype=dtype, name=f"{layer.name}_causal_keep"))
    if mask is not None:
        if t.rank == 4:  # one mask for every head
            mask = g.reshape(mask, shape=(BATCH, 1, *g.type(mask).shape[1:]))
        adder = g.mul(g.sub(mask, g.const(1.0, dtype)), g.const(-NEG, dtype), name=f"{layer.name}_mask_adder")
        if where:
            scores = g.mul(scores, mask, name=f"{layer.name}_kept")
        scores = g.add(scores, adder, name=f"{layer.name}_masked")
    weights = g.softmax(scores, axis=-1, name=f"{layer.name}_weights")
    if mask is not None and zero_hidden:
        weights = g.mul(weights, mask, name=f"{layer.name}_weights_kept")
    dropped = weights
    if ctx.training and rate > 0:
        keep = g.source("rng", f"{layer.name}_dropout_mask", t, rate=rate, layer=layer.name)
        dropped = g.mul(weights, keep, name=f"{layer.name}_dropped")
    return g.batch_matmul(dropped, value, name=f"{layer.name}_attended"), weights, dropped


# ---------------------------------------------------------------- MultiHeadAttention


class MultiHeadAttention(Rule):
    inputs = None  # query, value and an optional key
    keywords = True  # takes value and key by keyword (normalize.TENSOR_KEYWORDS)

    def check(self, layer, keras):
        cfg, where = layer.config, where_of(layer)
        check_count(layer, "num_heads", None)
        check_count(layer, "key_dim", None)
        if cfg.get("value_dim") is not None:
            check_count(layer, "value_dim", None)
        _check_dropout(layer)
        if cfg.get("use_gate"):
            raise ConfigError(f"{where}: use_gate=True is not supported")
        if cfg.get("sliding_window") is not None:
            raise ConfigError(f"{where}: sliding_window is not supported")
        axes = cfg.get("attention_axes")
        if axes not in (None, 1, [1], (1,), -2, [-2], (-2,)):
            raise ConfigError(
                f"{where}: attention_axes={axes!r} is not supported; kgraph attends over the steps axis only"
            )
        out = cfg.get("output_shape")
        if (
            out is not None
            and not is_count(out)
            and not (isinstance(out, (list, tuple)) and len(out) == 1 and is_count(out[0]))
        ):
            raise ConfigError(f"{where}: output_shape {out!r} is not supported; give the number of output features")
        _check_options(layer)

    @staticmethod
    def _named(layer, xs) -> dict:
        """{query, value, key, attention_mask: input} of a call: its positional inputs in the order
        of call(query, value, key), then those given by keyword."""
        names, _ = call_options(layer)
        names = list(names) + [None] * (len(xs) - len(names))
        positional = iter(("query", "value", "key"))
        named = {}
        for name, x in zip(names, xs):
            name = name or next(positional, "extra")
            if name in named or name == "extra":
                raise ConfigError(
                    f"{where_of(layer)}: takes query, value, key and attention_mask, got {len(xs)} inputs"
                )
            named[name] = x
        if "value" not in named:
            raise ConfigError(f"{where_of(layer)}: called without a value")
        return named

    def _dims(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        named = self._named(layer, shapes)
        _sequences(layer, [named[k] for k in ("query", "value", "key") if k in named], ("query", "value", "key"))
        query, value = named["query"], named["value"]
        key = named.get("key", value)
        if key[1] != value[1]:
            raise ConfigError(f"{where}: key {shape_str(key)} and value {shape_str(value)} differ in steps")
        mask = named.get("attention_mask")
        if mask is not None and tuple(mask[1:]) != (query[1], value[1]):
            raise ConfigError(
                f"{where}: attention_mask {shape_str(mask)} is not (None, query steps, value steps) = "
                f"(None, {query[1]}, {value[1]})"
            )
        heads, key_dim = cfg["num_heads"], cfg["key_dim"]
        value_dim = cfg.get("value_dim") or key_dim
        out = cfg.get("output_shape")
        out = query[-1] if out is None else out if isinstance(out, int) else out[0]
        return query, key, value, heads, key_dim, value_dim, out

    def output_shapes(self, layer, shapes):
        query, key, _, heads, _, _, out = self._dims(layer, shapes)
        if _check_options(layer)[1]:  # and the attention weights
            return [(None, query[1], out), (None, heads, query[1], key[1])]
        return [(None, query[1], out)]

    def output_shape(self, layer, shapes):
        return self.output_shapes(layer, shapes)[0]

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        query, key, value, heads, key_dim, value_dim, out = self._dims(layer, shapes)
        kernel_init = parse_initializer(cfg.get("kernel_initializer", "glorot_uniform"), where)
        bias_init = parse_initializer(cfg.get("bias_initializer", "zeros"), where)
        kernel_reg = parse_regularizer(cfg.get("kernel_regularizer"), where)
        bias_reg = parse_regularizer(cfg.get("bias_regularizer"), where)
        bias = cfg.get("use_bias", True)
        decls = []
        # Keras's order: query, key, value, attention_output; each kernel then bias
        for name, kernel, bias_shape in (
            ("query", (query[-1], heads, key_dim), (heads, key_dim)),
            ("key", (key[-1], heads, key_dim), (heads, key_dim)),
            ("value", (value[-1], heads, value_dim), (heads, value_dim)),
            ("attention_output", (heads, value_dim, out), (out,)),
        ):
            kernel_limit = parse_constraint(cfg.get("kernel_constraint"), where, kernel)
            decls.append(WeightDecl(f"{name}/kernel", kernel, kernel_init, kernel_reg, constraint=kernel_limit))
            if bias:
                bias_limit = parse_constraint(cfg.get("bias_constraint"), where, bias_shape)
                decls.append(WeightDecl(f"{name}/bias", bias_shape, bias_init, bias_reg, constraint=bias_limit))
        return decls

    def emit(self, ctx, layer, xs, shapes):
        g, name, p = ctx.g, layer.name, ctx.params
        query, key, value, heads, key_dim, value_dim, out = self._dims(layer, shapes)
        causal, return_scores = _check_options(layer)
        named = self._named(layer, xs)
        xq, xv = named["query"], named["value"]
        xk = named.get("key", xv)
        # the inputs' Keras masks and the attention_mask tensor, ANDed ([B, Tq|1, Tk|1])
        mask, q_mask = named.get("attention_mask"), ctx.masks.get(xq)
        for what, x, axis in (("query", xq, 2), ("value", xv, 1), ("key", xk, 1)):
            if ctx.masks.get(x) is not None and not (what == "key" and xk == xv):
                mask = _and(g, mask, _step_mask(g, ctx.masks[x], axis, f"{name}_{what}_mask"))

        def project(x, steps, features, what, dim):
            """x [B, T, D] @ kernel (D, heads, dim) [+ bias] -> [B, heads, T, dim]."""
            kernel = g.reshape(p[f"{what}/kernel"], shape=(features, heads * dim))
            y = g.matmul(x, kernel, name=f"{name}_{what}_matmul")
            if f"{what}/bias" in p:
                y = g.add(y, g.reshape(p[f"{what}/bias"], shape=(heads * dim,)), name=f"{name}_{what}_bias")
            y = g.reshape(y, shape=(BATCH, steps, heads, dim))
            return g.transpose(y, perm=(0, 2, 1, 3), name=f"{name}_{what}_heads")

        q = project(xq, query[1], query[-1], "query", key_dim)
        k = project(xk, key[1], key[-1], "key", key_dim)
        v = project(xv, value[1], value[-1], "value", value_dim)
        dtype = g.type(q).dtype
        q = g.mul(q, g.const(1.0 / math.sqrt(float(key_dim)), dtype), name=f"{name}_query_scaled")
        scores = g.batch_matmul(q, k, transpose_b=True, name=f"{name}_scores")  # [B, heads, Tq, Tk]
        rate = _check_dropout(layer)
        # Keras 3 runs its Softmax layer (zero_hidden) with dropout or the scores returned, else its
        # dot_product_attention; tf-keras adds -1e9 to hidden scores
        keras3, softmax_layer = ctx.keras >= 3, rate > 0 or return_scores
        o, weights, _ = _attend(ctx, layer, scores, v, causal, rate, mask, keras3, keras3 and softmax_layer)
        o = g.reshape(g.transpose(o, perm=(0, 2, 1, 3)), shape=(BATCH, query[1], heads * value_dim))
        kernel = g.reshape(p["attention_output/kernel"], shape=(heads * value_dim, out))
        y = g.matmul(o, kernel, name=f"{name}_output_matmul")
        if "attention_output/bias" in p:
            y = g.add(y, p["attention_output/bias"], name=f"{name}_output_bias")
        if q_mask is not None:
            ctx.masks[y] = q_mask
        return [y, weights] if return_scores else y


# ---------------------------------------------------------------- Attention and AdditiveAttention


class _ScoredAttention(Rule):
    """[query, value] or [query, value, key] -> (None, Tq, value features)."""

    inputs = None

    def check(self, layer, keras):
        _check_dropout(layer)
        if not isinstance(layer.config.get("use_scale", False), bool):
            raise ConfigError(f"{where_of(layer)}: use_scale must be true or false")
        names, _ = call_options(layer)
        if any(names):
            raise ConfigError(f"{where_of(layer)}: takes its inputs as one list [query, value, key]")
        _check_options(layer)

    def _shapes(self, layer, shapes):
        where = where_of(layer)
        if len(shapes) not in (2, 3):
            raise ConfigError(f"{where}: takes [query, value] or [query, value, key], got {len(shapes)} inputs")
        _sequences(layer, shapes, ("query", "value", "key"))
        query, value = shapes[0], shapes[1]
        key = shapes[2] if len(shapes) == 3 else value
        if key[1] != value[1]:
            raise ConfigError(f"{where}: key {shape_str(key)} and value {shape_str(value)} differ in steps")
        if query[-1] != key[-1]:
            raise ConfigError(f"{where}: query {shape_str(query)} and key {shape_str(key)} differ in features")
        return query, key, value

    def output_shapes(self, layer, shapes):
        query, key, value = self._shapes(layer, shapes)
        if _check_options(layer)[1]:  # and the attention weights
            return [(None, query[1], value[-1]), (None, query[1], key[1])]
        return [(None, query[1], value[-1])]

    def output_shape(self, layer, shapes):
        return self.output_shapes(layer, shapes)[0]

    def emit(self, ctx, layer, xs, shapes):
        self._shapes(layer, shapes)
        g, name = ctx.g, layer.name
        q, v = xs[0], xs[1]
        k = xs[2] if len(xs) == 3 else v
        causal, return_scores = _check_options(layer)
        scores = self.scores(ctx, layer, q, k)  # [B, Tq, Tk]
        # Keras reads [query mask, value mask]: the value's hides key steps (the key's is ignored)
        q_mask, v_mask = ctx.masks.get(q), ctx.masks.get(v)
        mask = None if v_mask is None else _step_mask(g, v_mask, 1, f"{name}_value_mask")
        y, _, dropped = _attend(ctx, layer, scores, v, causal, _check_dropout(layer), mask)
        if q_mask is not None:  # masked query steps output 0, and pass the mask on
            y = g.mul(y, _step_mask(g, q_mask, 2, f"{name}_query_mask"), name=f"{name}_query_masked")
            ctx.masks[y] = q_mask
        return [y, dropped] if return_scores else y


def _pairs(g, q, k, name):
    """q[:, i] + k[:, j] for every pair of steps: [B, Tq, Tk, features]."""
    tq, d = g.type(q).shape[1:]
    tk = g.type(k).shape[1]
    return g.add(g.reshape(q, shape=(BATCH, tq, 1, d)), g.reshape(k, shape=(BATCH, 1, tk, d)), name=f"{name}_pairs")


class Attention(_ScoredAttention):
    def check(self, layer, keras):
        super().check(layer, keras)
        mode = layer.config.get("score_mode", "dot")
        if mode not in ("dot", "concat"):
            raise ConfigError(f"{where_of(layer)}: score_mode must be 'dot' or 'concat', got {mode!r}")

    def weights(self, layer, shapes):
        decls = []
        if layer.config.get("use_scale", False):
            decls.append(WeightDecl("scale", (), ("Ones", {}), None))
        if layer.config.get("score_mode", "dot") == "concat":
            decls.append(WeightDecl("concat_score_weight", (), ("Ones", {}), None))
        return decls

    def scores(self, ctx, layer, q, k):
        g, name, p = ctx.g, layer.name, ctx.params
        if layer.config.get("score_mode", "dot") == "dot":
            scores = g.batch_matmul(q, k, transpose_b=True, name=f"{name}_scores")
            return g.mul(scores, p["scale"], name=f"{name}_scaled") if "scale" in p else scores
        pairs = _pairs(g, q, k, name)
        if "scale" in p:
            pairs = g.mul(pairs, p["scale"])
        summed = g.reduce_sum(g.tanh(pairs), axes=(3,))
        return g.mul(summed, p["concat_score_weight"], name=f"{name}_scores")


class AdditiveAttention(_ScoredAttention):
    def weights(self, layer, shapes):
        if not layer.config.get("use_scale", True):
            return []
        return [WeightDecl("scale", (shapes[0][-1],), ("GlorotUniform", {}), None)]

    def scores(self, ctx, layer, q, k):
        g, name, p = ctx.g, layer.name, ctx.params
        t = g.tanh(_pairs(g, q, k, name))
        if "scale" in p:
            t = g.mul(t, p["scale"])
        return g.reduce_sum(t, axes=(3,), name=f"{name}_scores")


ATTENTION_RULES = {
    "MultiHeadAttention": MultiHeadAttention(),
    "Attention": Attention(),
    "AdditiveAttention": AdditiveAttention(),
}
