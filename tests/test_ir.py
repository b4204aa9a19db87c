"""The IR's data structures: graph construction, types, verifier, printer and DOT export."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ir
from ir.types import broadcast_shapes


def f32(*shape):
    return ir.TensorType(shape, "float32")


def dense_relu_graph():
    g = ir.Graph("dense")
    x = g.source("input", "x", f32("B", 4))
    w = g.source("param", "kernel", f32(4, 3))
    b = g.source("param", "bias", f32(3))
    h = g.matmul(x, w, name="h")
    z = g.add(h, b, name="z")
    y = g.relu(z, name="y")
    g.outputs["output:dense"] = y
    return g


# ---------------------------------------------------------------- types


def test_tensor_type_str():
    assert str(f32("B", 128)) == "f32[B,128]"
    assert str(ir.TensorType((2, 3), "float64")) == "f64[2,3]"
    assert str(ir.TensorType(("B",), "int32")) == "i32[B]"
    assert str(ir.TensorType((), "int64")) == "i64[]"
    assert str(ir.scalar()) == "f32[]"


def test_tensor_type_concrete_and_sizes():
    t = f32("B", 4, 5)
    assert t.rank == 3 and t.has_batch
    assert t.concrete(7) == (7, 4, 5)
    assert t.per_batch_size() == (20, 0)
    assert t.numel(7) == 140
    u = f32(4, 5)
    assert not u.has_batch
    assert u.concrete(7) == (4, 5)
    assert u.per_batch_size() == (0, 20)
    assert ir.scalar().per_batch_size() == (0, 1)
    assert ir.scalar().concrete(3) == ()
    assert f32("B").per_batch_size() == (1, 0)
    assert t.with_shape(("B", 20)) == f32("B", 20)


def test_tensor_type_normalises_numpy_ints_and_is_hashable():
    t = ir.TensorType((np.int64(3), 4))
    assert t.shape == (3, 4) and all(type(d) is int for d in t.shape)
    assert t == f32(3, 4) and hash(t) == hash(f32(3, 4))


@pytest.mark.parametrize(
    "shape,dtype,match",
    [
        ((2,), "float16", "unsupported dtype 'float16'"),
        ((-1, 3), "float32", "bad dimension -1"),
        (("C", 3), "float32", "bad dimension 'C'"),
        ((2.5,), "float32", "bad dimension 2.5"),
    ],
)
def test_tensor_type_rejects(shape, dtype, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        ir.TensorType(shape, dtype)


def test_broadcast_shapes():
    assert broadcast_shapes(("B", 3), (3,)) == ("B", 3)
    assert broadcast_shapes((3,), ("B", 3)) == ("B", 3)
    assert broadcast_shapes(("B", 1), (1, 3)) == ("B", 3)
    assert broadcast_shapes((), (2, 3)) == (2, 3)
    assert broadcast_shapes((2, 1, 4), (3, 1)) == (2, 3, 4)


@pytest.mark.parametrize("a,b", [(("B", 3), (4,)), ((2, 3), (3, 2)), (("B", 3), (5, 3))])
def test_broadcast_shapes_error_names_both_shapes(a, b):
    with pytest.raises(ValueError) as e:
        broadcast_shapes(a, b)
    assert str(a) in str(e.value) and str(b) in str(e.value)


def test_broadcast_dtype_mismatch_is_a_type_error():
    g = ir.Graph()
    x = g.source("input", "x", f32("B", 3))
    y = g.source("input", "y", ir.TensorType(("B", 3), "float64"))
    with pytest.raises(TypeError, match="different dtypes"):
        g.add(x, y)


# ---------------------------------------------------------------- graph construction


def test_graph_construction_infers_types_and_orders_nodes():
    g = dense_relu_graph()
    assert len(g) == 6
    assert [n.id for n in g.nodes()] == ["x", "kernel", "bias", "h", "z", "y"]
    assert g.type("h") == f32("B", 3)
    assert g.node("z").inputs == ("h", "bias")
    assert [n.id for n in g.sources()] == ["x", "kernel", "bias"]
    assert [n.id for n in g.sources("param")] == ["kernel", "bias"]
    assert [n.id for n in g.users("h")] == ["z"]
    assert "y" in g and "nope" not in g
    assert g.node("x").is_source and not g.node("h").is_source


def test_fresh_ids_never_collide():
    g = ir.Graph()
    x = g.source("input", "x", f32("B", 2))
    a, b, c = g.neg(x), g.neg(x), g.neg(x, name="neg")
    assert (a, b, c) == ("neg", "neg_1", "neg_2")
    assert g.neg(x, name="a b-c") == "a_b_c"
    assert g.const(2.0) == "c" and g.const(3.0) == "c_1"
    assert g.type("c") == ir.scalar("float32") and g.node("c_1").attrs == {"value": 3.0}


def test_attrs_are_kept_and_semantic_attrs_drop_bookkeeping():
    g = ir.Graph()
    x = g.source("input", "x", f32("B", 2, 3))
    s = g.reduce_sum(x, axes=(1,), keepdims=True)
    assert g.type(s) == f32("B", 1, 3)
    g.node(s).attrs["note"] = "hello"
    g.node(s).attrs["fused"] = ["a"]
    assert g.node(s).semantic_attrs() == {"axes": (1,), "keepdims": True}


def test_unknown_operand_is_an_error():
    g = ir.Graph("g1")
    x = g.source("input", "x", f32("B", 3))
    with pytest.raises(KeyError, match=r"operand %ghost is not in graph 'g1'"):
        g.add(x, "ghost")
    assert len(g) == 1  # nothing half-added
    with pytest.raises(KeyError, match=r"no node %ghost"):
        g.node("ghost")


def test_unknown_op_attribute_is_an_attribute_error():
    g = ir.Graph()
    with pytest.raises(AttributeError, match="no attribute or op 'frobnicate'"):
        g.frobnicate  # noqa: B018 (the attribute access is what raises)
    with pytest.raises(AttributeError):
        g._private_thing  # noqa: B018
    assert not hasattr(g, "frobnicate")
    with pytest.raises(KeyError, match="unknown IR op 'frobnicate'"):
        g.add_node("frobnicate", ())
    with pytest.raises(KeyError, match="known ops: .*matmul"):
        ir.get_op("frobnicate")


def test_source_rules():
    g = ir.Graph()
    with pytest.raises(ValueError, match="'matmul' is not a source op"):
        g.source("matmul", "m", f32(2))
    with pytest.raises(TypeError, match="source node's type is given"):
        g.add_node("param", ())


def test_shape_rule_errors_surface_at_construction():
    g = ir.Graph()
    a = g.source("param", "a", f32(2, 3))
    b = g.source("param", "b", f32(4, 5))
    with pytest.raises(ValueError, match="inner dimensions differ"):
        g.matmul(a, b)
    with pytest.raises(ValueError, match="do not broadcast"):
        g.add(a, b)
    with pytest.raises(ValueError, match="element counts differ"):
        g.reshape(a, shape=(5,))
    x = g.source("input", "x", f32("B", 3))
    with pytest.raises(ValueError, match="batch axis"):
        g.concat(x, x, axis=0)


def test_rewriting_replace_uses_and_remove():
    g = dense_relu_graph()
    y2 = g.tanh("z", name="y2")
    g.replace_uses("y", y2)
    assert g.outputs["output:dense"] == y2
    g.remove("y")
    assert "y" not in g
    with pytest.raises(ValueError, match="still has users"):
        g.remove("z")
    c = g.clone()
    c.node("h").attrs["note"] = "only in clone"
    assert "note" not in g.node("h").attrs
    ir.verify(g)


# ---------------------------------------------------------------- verifier


def test_verifier_passes_a_good_graph():
    ir.verify(dense_relu_graph())


def test_verifier_catches_a_wrong_type():
    g = dense_relu_graph()
    g.node("z").type = f32("B", 4)
    with pytest.raises(ir.VerifyError, match=r"%z = add: type is f32\[B,4\], the shape rule gives f32\[B,3\]"):
        ir.verify(g)


def test_verifier_catches_a_shape_rule_failure():
    g = dense_relu_graph()
    g.set_inputs("h", ["kernel", "x"])  # (4,3) @ (B,4)
    with pytest.raises(ir.VerifyError, match=r"%h = matmul: matmul: inner dimensions differ"):
        ir.verify(g)


def test_verifier_catches_a_cycle():
    g = dense_relu_graph()
    g.set_inputs("h", ["y", "kernel"])
    with pytest.raises(ir.VerifyError, match="has a cycle"):
        ir.verify(g)


def test_verifier_catches_a_dangling_output():
    g = dense_relu_graph()
    g.outputs["loss"] = "missing"
    with pytest.raises(ir.VerifyError, match="output 'loss' names %missing"):
        ir.verify(g)


# ---------------------------------------------------------------- printer

DENSE_RELU_TEXT = """\
graph dense(%x: f32[B,4], %kernel: f32[4,3], %bias: f32[3]) {
  %h: f32[B,3] = matmul(%x, %kernel)
  %z: f32[B,3] = add(%h, %bias)  # bias add
  %y: f32[B,3] = relu(%z)
  %m: f32[B,1] = reduce_mean(%y) {axes=(1,), keepdims=True}
  %c: f32[] = const() {value=0.5}
  %s: f32[B,1] = mul(%m, %c)
  return output:dense=%y, extra=%s
}"""


def test_printer_snapshot():
    g = dense_relu_graph()
    g.node("z").attrs["note"] = "bias add"
    m = g.reduce_mean("y", axes=(1,), keepdims=True, name="m")
    s = g.mul(m, g.const(0.5), name="s")
    g.outputs["extra"] = s
    assert ir.format_graph(g) == DENSE_RELU_TEXT
    assert str(g) == DENSE_RELU_TEXT


def test_format_node_notes():
    g = dense_relu_graph()
    n = g.node("h")
    n.attrs.update(transpose_b=False, fused=["matmul", "add", "relu"], bias_grad="db", note="hi")
    assert ir.format_node(n) == (
        "%h: f32[B,3] = matmul(%x, %kernel) {transpose_b=False}  # fused: matmul+add+relu; also writes %db; hi"
    )


# ---------------------------------------------------------------- DOT


def test_dot_has_every_node_and_edge():
    g = dense_relu_graph()
    text = ir.to_dot(g)
    assert text.startswith('digraph "dense" {') and text.rstrip().endswith("}")
    for n in g.nodes():
        assert re.search(rf'^  "{n.id}" \[label="{n.id}\\n{n.op} {re.escape(str(n.type))}"', text, re.M), n.id
        for i in n.inputs:
            assert f'  "{i}" -> "{n.id}";' in text
    assert text.count(" -> ") == g.nx.number_of_edges() + len(g.outputs)
    assert '"y" -> "out:output:dense" [style=dashed];' in text
    assert 'fillcolor=lightskyblue' in text  # the GEMM


def test_dot_quotes_names():
    g = ir.Graph('we "quote"')
    g.source("input", "x", f32("B", 2))
    assert 'digraph "we \\"quote\\"" {' in ir.to_dot(g)


# ---------------------------------------------------------------- interpreter


def test_interpreter_runs_the_graph_and_needs_every_source():
    g = dense_relu_graph()
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in [(5, 4), (4, 3), (3,)])
    env = ir.interpret(g, {"x": x, "kernel": w, "bias": b})
    np.testing.assert_allclose(env["y"], np.maximum(x @ w + b, 0), rtol=1e-6)
    assert env["y"].dtype == np.float32
    with pytest.raises(KeyError, match="no value fed for param %bias"):
        ir.interpret(g, {"x": x, "kernel": w})
