"""kgraph/kernels: the element, row and update maths written once, run three ways (plain Python,
inside numba.njit, inside the CUDA simulator in tests/cuda_checks.py), against the IR's NumPy
references; and the rules that keep it one source."""

import inspect
import math

import numpy as np
import pytest
from numba import njit

import ir
from ir.ops.elementwise import ACTIVATIONS
from ir.ops.optim import UPDATES as IR_UPDATES
from kgraph.codegen.lowering import element_call, scalars_calls, update_statements
from kgraph.kernels import maths as E, updates as U

X = np.concatenate([np.linspace(-4.5, 4.5, 37), [-7.0, 6.5, 8.0]])
X = X[(np.abs(np.abs(X) - 3) > 1e-3) & (np.abs(X - 6) > 1e-3) & (np.abs(X) > 1e-3)]  # off the kinks


def ref(op, *args, **attrs):
    return ir.REGISTRY[op].forward(*args, **attrs)


def _elementwise(fn, nargs):
    """fn applied elementwise by a compiled loop (as a generated kernel calls it)."""
    if nargs == 1:

        @njit
        def loop(x, out):
            for i in range(x.shape[0]):
                out[i] = fn(x[i])

        return lambda x: (lambda out: (loop(x, out), out)[1])(np.empty_like(x))

    @njit
    def loop2(a, b, out):
        for i in range(a.shape[0]):
            out[i] = fn(a[i], b[i])

    return lambda a, b: (lambda out: (loop2(a, b, out), out)[1])(np.empty_like(a))


@pytest.mark.parametrize("name", [a for a in ACTIVATIONS if a != "linear"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_maths_matches_the_ir_reference(name, dtype):
    x = X.astype(dtype)
    fwd, _, from_output = ACTIVATIONS[name]
    want = ref(name, x)
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    forward = getattr(E, name)
    np.testing.assert_allclose([forward(v) for v in x], want, **tol)  # plain Python
    got = _elementwise(forward, 1)(x)  # compiled
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, **tol)
    g = np.linspace(-1, 1, x.size).astype(dtype)
    v = want if from_output else x
    grad = _elementwise(getattr(E, name + "_grad"), 2)(g, v)
    np.testing.assert_allclose(grad, ref("act_grad", g, v, activation=name), **tol)


def test_compiled_float32_maths_stays_in_float32():
    """like(x, c) keeps constants in x's type: no float64 instruction in a float32 kernel."""

    @njit
    def kernel(x, out):
        for i in range(x.size):
            out[i] = E.gelu(x[i], True) + E.selu(x[i]) + E.mish(x[i])

    x = X.astype(np.float32)
    kernel(x, np.empty_like(x))
    llvm = next(iter(kernel.inspect_llvm().values()))
    assert "fpext float" not in llvm and "fadd double" not in llvm


def test_row_maths_matches_the_ir_reference():
    rs = np.random.RandomState(0)
    z, t = rs.randn(5, 7).astype(np.float32), np.abs(rs.randn(5, 7)).astype(np.float32)
    t /= t.sum(1, keepdims=True)
    labels, g = np.array([0, 6, 3, 3, 9]), rs.randn(5).astype(np.float32)
    from kgraph.kernels import cpu as K

    for rows, want in [
        (lambda: K.softmax_rows(z, out := np.empty_like(z)) or out, ref("softmax", z)),
        (lambda: K.softmax_ce_rows(z, t, out := np.empty(5, np.float32)) or out, ref("softmax_cross_entropy", z, t)),
        (
            lambda: K.sparse_softmax_ce_rows(z, labels, out := np.empty(5, np.float32)) or out,  # id 9: no class
            np.log(np.exp(z).sum(1)) - np.append(z[np.arange(4), labels[:4]], 0),
        ),
        (
            lambda: K.pick_rows(z, labels, out := np.empty(5, np.float32)) or out,
            [z[0, 0], z[1, 6], z[2, 3], z[3, 3], 0],
        ),
        (
            lambda: K.softmax_ce_grad_rows(z, t, g, out := np.empty_like(z)) or out,
            ref("softmax_cross_entropy_grad", z, t, g),
        ),
    ]:
        np.testing.assert_allclose(rows(), want, rtol=2e-6, atol=1e-7)
    # in plain Python too (the CUDA simulator runs them so)
    out = np.empty(7, np.float32)
    E.softmax_row(z[1], out)
    np.testing.assert_allclose(out, ref("softmax", z)[1], rtol=2e-6)


@pytest.mark.parametrize("op", sorted(IR_UPDATES))
def test_every_update_record_matches_the_ir_reference_in_python(op):
    """The element function and its per-step scalars, as the generated loops call them but in
    plain Python, against the IR op (its own formula) for the configurations each slot appears in,
    and with Keras's use_ema after it (step 3: overwriting every 3 steps, not every 2)."""
    rs = np.random.RandomState(1)
    flags = {"amsgrad": True, "centered": True, "momentum": 0.5, "nesterov": True}
    flags = {k: v for k, v in flags.items() if k in IR_UPDATES[op].defaults}
    ema = [
        {**flags, "ema_momentum": 0.7, "ema_overwrite_frequency": 3},
        {"ema_momentum": 0.7, "ema_overwrite_frequency": 2},
    ]
    # gradient_accumulation_steps: step 3 applies the mean of 3 steps' gradients; with 2 it only adds
    accumulate = [
        {"weight_decay": 0.01, "gradient_accumulation_steps": 3, **ema[0]},
        {"gradient_accumulation_steps": 2},
    ]
    for extra in ({}, flags, {"weight_decay": 0.01}, *ema, *accumulate):
        h = {**IR_UPDATES[op].defaults, **extra}
        slots = {
            k: np.abs(rs.randn(6)) + v + (5.0 if k == "velocity" else 0.0) for k, v in IR_UPDATES[op].slots(h).items()
        }
        if "ema_momentum" in h:
            slots["average"] = rs.randn(6)
        if "gradient_accumulation_steps" in h:
            slots["gradient_accumulator"] = rs.randn(6)
        w, g, lr, step, gscale = rs.randn(6), rs.randn(6), 0.01, 3.0, 0.75
        want = [w.copy(), *[a.copy() for a in slots.values()]]
        ref(op, want[0], g, *want[1:], np.float64(lr), np.float64(step), np.float64(gscale), **extra)
        record = U.UPDATES[op]
        env = {"U": U, "lr": lr, "step": step}
        values = {k: v for names, call in scalars_calls(op, h) for k, v in zip(names, eval(call, env))}
        arrays = {"w": w.copy(), "g": g, "ema_average": slots.get("average", np.zeros(6)).copy()}
        arrays["gradient_sum"] = slots.get("gradient_accumulator", np.zeros(6)).copy()
        present = dict(zip(IR_UPDATES[op].slots(h), slots.values()))
        for slot, param in zip(record.slots, record.slot_params):
            arrays[param] = present[slot].copy() if slot in present else None
        statements = "\n".join(update_statements(op, h))
        for i in range(6):
            exec(
                statements,
                {"U": U},
                {**arrays, **values, "i": i, "zero": 0.0, "gscale": gscale, "decay": h.get("weight_decay", 0.0) * lr},
            )
        got = [arrays["w"]] + [arrays[p] for s, p in zip(record.slots, record.slot_params) if s in present]
        got += [arrays["ema_average"]] if "average" in slots else []
        got += [arrays["gradient_sum"]] if "gradient_accumulator" in slots else []
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-12, err_msg=f"{op} {extra}")


def test_update_records_name_the_ir_slots_in_operand_order():
    for op, record in U.UPDATES.items():
        assert op in IR_UPDATES, op
        defaults = IR_UPDATES[op].defaults
        for flags in (
            {},
            {"amsgrad": True},
            {"centered": True},
            {"momentum": 0.5},
            {"centered": True, "momentum": 0.5},
        ):
            h = {**defaults, **{k: v for k, v in flags.items() if k in defaults}}
            present = list(IR_UPDATES[op].slots(h))
            assert [s for s in record.slots if s in present] == present, op
        params = inspect.signature(record.scalars).parameters
        assert list(params)[:2] == ["lr", "step"] and set(list(params)[2:]) <= set(defaults), op


def test_an_elementwise_op_without_maths_is_named():
    with pytest.raises(NotImplementedError, match="kgraph.kernels.maths.nonesuch"):
        element_call("nonesuch", ["a0"], {}, str)
    assert element_call("leaky_relu", ["x"], {"alpha": 0.1}, lambda v: f"C[{v}]") == "E.leaky_relu(x, C[0.1])"
    assert element_call("gelu", ["x"], {}, str) == "E.gelu(x, False)"
    assert element_call("act_grad", ["g", "y"], {"activation": "mish"}, str) == "E.mish_grad(g, y)"
    assert math.isclose(E.like(np.float32(1.5), 2), 2.0) and type(E.like(np.float32(1.5), 2)) is np.float32


# ---------------------------------------------------------------- drivers, compiled and as Python


class _BothForms:
    """kgraph.kernels.cpu, whose drivers (cpu.driver) run three times on copies of their arguments:
    the compiled parallel kernel, and its Python function (what a step's Python twin runs:
    serial.py) calling the compiled kernels, then the NumPy forms of those that have one (as it
    does until they are compiled: serial.NumPyUntilCompiled). All three must write the same
    floats, bit for bit, to every array."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        from kgraph.runtime import serial

        kernel = getattr(self.module, name)
        if not serial.is_driver(kernel):
            return kernel

        def both(*args):
            copies, numpy_copies = _copies_keeping_views(args), _copies_keeping_views(args)
            kernel(*args)
            serial.python_form(kernel)(*copies)
            _with_numpy_forms(kernel)(*numpy_copies)
            for i, (a, b, c) in enumerate(zip(args, copies, numpy_copies)):
                if isinstance(a, np.ndarray):
                    np.testing.assert_array_equal(a, b, err_msg=f"{name} argument {i}")
                    np.testing.assert_array_equal(a, c, err_msg=f"{name} argument {i}, NumPy forms")

        return both


def _with_numpy_forms(driver):
    """`driver` as Python, calling the NumPy forms of the kernels that have one."""
    from kgraph.runtime import serial

    namespace = serial.drivers_namespace(driver.py_func.__globals__)
    namespace.update({k: v.numpy_form for k, v in namespace.items() if isinstance(v, serial.NumPyUntilCompiled)})
    return serial.with_globals(driver.py_func, namespace)


def _copies_keeping_views(args):
    """Copies of the arrays among `args`, where two views of one array (a kernel's operand as an
    image and as a matrix) stay views of one copy."""
    bases: dict = {}

    def copy(a):
        base = a if a.base is None else a.base
        if id(base) not in bases:
            bases[id(base)] = (base, base.copy())
        original, new = bases[id(base)]
        offset = a.__array_interface__["data"][0] - original.__array_interface__["data"][0]
        return np.ndarray(a.shape, a.dtype, buffer=new, offset=offset, strides=a.strides)

    return [copy(a) if isinstance(a, np.ndarray) else a for a in args]


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_the_split_gemms_and_sums_compute_the_same_floats_as_python(parts):
    """The drivers not in a convolution block (those are in the test below), as a step's Python
    twin runs them: the split GEMMs (the split over K adds its parts in order), the column sum
    and the im2col's adjoint; the drivers are the CPU's parallel kernels but none."""
    from kgraph.kernels import cpu as K
    from kgraph.runtime import serial

    assert {k for k, v in vars(K).items() if serial.is_parallel(v) and not serial.is_driver(v)} == set()
    B = _BothForms(K)
    rs = np.random.RandomState(parts)
    x, w, g = rs.randn(7, 12).astype(np.float32), rs.randn(12, 5).astype(np.float32), rs.randn(7, 5).astype(np.float32)
    out = np.zeros((7, 5), np.float32)
    B.gemm_split_k(x, w, out, np.full((parts - 1, 7, 5), np.nan, np.float32))
    np.testing.assert_allclose(out, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    # as steps generated before it ran every part whatever the threads call it (with their parts)
    again = np.zeros_like(out)
    B.gemm_split_k(x, w, again, np.full((parts - 1, 7, 5), np.nan, np.float32), 1)
    np.testing.assert_array_equal(again, out)
    B.gemm_split_m(g, w, np.zeros((7, 12), np.float32), True, 1, parts)
    B.gemm_split_m(x, w, np.zeros((7, 5), np.float32), False, 1, parts)
    B.gemm_split_rows(x, g, np.zeros((12, 5), np.float32), parts)
    B.gemm_split_cols(g, w, np.zeros((7, 12), np.float32), parts)
    B.gemm_split_batch(x, g, np.zeros((12, 5), np.float32), np.zeros((parts, 12, 5), np.float32))
    sums = np.zeros(12, np.float32)
    B.column_sum(x, sums, np.zeros((parts, 12), np.float32), parts == 2, parts)
    np.testing.assert_allclose(sums, x.mean(0) if parts == 2 else x.sum(0), rtol=1e-5, atol=1e-6)
    cols = rs.randn(3, 4, 5, 18).astype(np.float32)
    B.col2im(cols, np.zeros((3, 4, 5, 2), np.float32), 3, 3, 1, 1, 1, 1, 1, 1, parts)


# ---------------------------------------------------------------- convolutions in sample blocks


@pytest.mark.parametrize("block", [1, 2, 5])
@pytest.mark.parametrize("samples, parts", [(5, 1), (5, 2), (5, 3), (2, 3)])
@pytest.mark.parametrize("is_max, relu", [(True, True), (False, True), (True, False)])
def test_a_convolution_block_computes_its_kernels_floats(block, samples, parts, is_max, relu):
    """conv_block: im2col, GEMM, bias + activation and pooling a block of samples at a time, the
    same floats as each kernel over the whole batch; pool2d_grad_kernel_grad: pooling's gradient
    and its bias sum bit for bit, the kernel gradient (added a block at a time) to rounding.
    5 samples: parts of 1 or 2, blocks that split a part or hold it whole; 2 in 3 parts: one part
    has none, and adds nothing."""
    from kgraph.kernels import cpu as K

    K = _BothForms(K)  # each driver compiled and as Python (runtime/serial.py), compared bit for bit
    rs = np.random.RandomState(block * 10 + parts)
    x = rs.randn(samples, 9, 8, 2).astype(np.float32)
    patch = (3, 3, 2, 1, 1, 1, 1, 1)  # kernel, strides, dilation, pads top and left ('same')
    cols = np.zeros((samples, 5, 8, 18), np.float32)
    w, bias = rs.randn(18, 4).astype(np.float32), rs.randn(4).astype(np.float32)
    pool = (is_max, 2, 2, 2, 2, 0, 0)
    # the kernels one at a time
    K.im2col(x, cols, *patch, parts)
    out = np.zeros((samples, 5, 8, 4), np.float32)
    K.gemm_split_m(cols.reshape(-1, 18), w, out.reshape(-1, 4), False, 40, parts)
    out = np.maximum(out + bias, 0) if relu else out + bias  # E.relu: maximum
    y = np.zeros((samples, 2, 4, 4), np.float32)
    K.pool2d(out, y, *pool, parts)
    # in blocks
    cols_b, out_b, y_b = np.zeros_like(cols), np.zeros_like(out), np.zeros_like(y)
    K.conv_block(
        x,
        cols_b,
        cols_b.reshape(-1, 18),
        w,
        bias,
        out_b,
        out_b.reshape(-1, 4),
        y_b,
        *patch,
        relu,
        True,
        *pool,
        block,
        parts,
    )
    for a, b in ((cols, cols_b), (out, out_b), (y, y_b)):
        np.testing.assert_array_equal(a, b)
    # backward: pooling's gradient (with the ReLU's, and the bias sum), then cols^T @ gx
    g = rs.randn(*y.shape).astype(np.float32)
    chunks = max(parts, 2)
    scratch, sums = np.zeros((chunks, 2 * 4 + 16), np.float32), np.zeros(4, np.float32)
    gx = np.zeros_like(out)
    K.pool2d_grad(g, out, y, gx, scratch, sums, *pool, relu, True)
    dw = np.zeros((18, 4), np.float32)
    K.gemm_split_batch(cols.reshape(-1, 18), gx.reshape(-1, 4), dw, np.zeros((chunks, 18, 4), np.float32))
    gx_b, sums_b, dw_b = np.full_like(gx, np.nan), np.zeros(4, np.float32), np.zeros((18, 4), np.float32)
    partials = np.full((chunks, 18, 4), np.nan, np.float32)  # garbage no part may add
    K.pool2d_grad_kernel_grad(
        g,
        out,
        y,
        gx_b,
        gx_b.reshape(-1, 4),
        scratch,
        sums_b,
        cols.reshape(-1, 18),
        dw_b,
        partials,
        *pool,
        relu,
        True,
        block,
    )
    np.testing.assert_array_equal(gx, gx_b)
    np.testing.assert_array_equal(sums, sums_b)
    np.testing.assert_allclose(
        dw_b, cols.reshape(-1, 18).T.astype(np.float64) @ gx.reshape(-1, 4), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(dw_b, dw, rtol=1e-5, atol=1e-5)


def test_no_cpu_kernel_assigns_an_array_into_a_slice():
    """`a[i:j] = b` or `a[i, :] += b[k]` (an array, not a number) makes Numba compile the message
    of its shape-mismatch error, string formatting that cost 2.4 s of a first step on an empty
    cache, into whichever kernel first has one: the CPU kernels copy rows by loops (and so do
    generated steps: tests/test_codegen.py)."""
    from pathlib import Path

    import kgraph.kernels
    from source_checks import array_slice_assignments

    found = []
    for name in ("cpu.py", "rnn_rows.py", "blas.py", "updates.py", "maths.py"):
        path = Path(kgraph.kernels.__file__).parent / name
        found += [f"{name}:{line}" for line in array_slice_assignments(path.read_text())]
    assert found == []


# ---------------------------------------------------------------- NumPy forms (kernels/numpy_forms.py)

# height, width, channels, kernel (or window) rows and columns, strides, dilations, pads top and left
_PATCHES = [
    (5, 6, 1, 3, 3, 1, 1, 1, 1, 1, 1),  # 'same', one channel
    (7, 5, 3, 3, 2, 2, 1, 1, 2, 1, 0),  # strided rows, dilated columns
    (8, 8, 4, 2, 2, 2, 2, 1, 1, 0, 0),  # windows that do not overlap
    (7, 7, 2, 3, 3, 1, 2, 1, 1, 1, 0),  # windows that overlap
    (9, 9, 2, 3, 3, 3, 3, 2, 2, 2, 2),  # a window with a single row and column inside
    (4, 4, 3, 1, 1, 1, 1, 1, 1, 0, 0),  # 1x1
]


def _bits(a):
    """The bits of float32 `a`, every NaN as NumPy's (which NaN survives a sum of two is the
    compiler's choice: kernels/numpy_forms.py)."""
    return np.where(np.isnan(a), np.float32(np.nan), a).astype(np.float32).view(np.int32)


def _raising(form):
    """`form` run where any NumPy floating-point warning raises: the forms turn them off."""

    def run(*args):
        with np.errstate(all="raise"):
            form(*args)

    return run


@pytest.mark.parametrize("h, w, c, kh, kw, sh, sw, dh, dw, pt, pl", _PATCHES)
def test_the_numpy_forms_write_their_kernels_floats_bit_for_bit(h, w, c, kh, kw, sh, sw, dh, dw, pt, pl):
    """What a step's Python function runs until these kernels are compiled: the same bits in every
    array they write (NaN and signed zeros included), for samples [1, 4) of 5, the others left
    as they were. Max pooling: ties, NaN, a ReLU's zeros; its gradient with and without the ReLU's
    and the bias sums (scratch included), an infinite gradient too. No NumPy warning either."""
    from kgraph.kernels import cpu as K, numpy_forms as F

    rs = np.random.RandomState(h * 10 + c)
    patch = (kh, kw, sh, sw, dh, dw, pt, pl)
    oh, ow = (h + 2 * pt - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pl - dw * (kw - 1) - 1) // sw + 1
    x = rs.randn(5, h, w, c).astype(np.float32)
    cols = [np.full((5, oh, ow, kh * kw * c), 7, np.float32) for _ in range(2)]
    K._im2col(x, cols[0], 1, 4, *patch)
    _raising(F.im2col_rows)(x, cols[1], 1, 4, *patch)
    assert np.array_equal(_bits(cols[0]), _bits(cols[1]))
    patches = rs.randn(5, oh, ow, kh * kw * c).astype(np.float32)
    images = [np.full((5, h, w, c), 7, np.float32) for _ in range(2)]
    K._col2im(patches, images[0], 1, 4, *patch)
    _raising(F.col2im_rows)(patches, images[1], 1, 4, *patch)
    assert np.array_equal(_bits(images[0]), _bits(images[1]))

    window = (kh, kw, sh, sw, pt, pl)  # pooling: no dilation
    oh, ow = (h + 2 * pt - kh) // sh + 1, (w + 2 * pl - kw) // sw + 1
    image = np.round(rs.randn(5, h, w, c), 1).astype(np.float32)  # rounded: ties
    image.ravel()[rs.randint(0, image.size, 4)] = np.nan
    image.ravel()[rs.randint(0, image.size, 4)] = -0.0
    for x in (image, np.maximum(image, 0)):  # a ReLU's output too
        pooled = [np.full((5, oh, ow, c), 7, np.float32) for _ in range(2)]
        K._pool2d_max(x, pooled[0], 1, 4, *window)
        _raising(F.pool2d_max_rows)(x, pooled[1], 1, 4, *window)
        assert np.array_equal(_bits(pooled[0]), _bits(pooled[1]))
        y, g = pooled[0], rs.randn(5, oh, ow, c).astype(np.float32)
        g[np.isnan(y)] = np.inf  # a window of NaN keeps its g: the sums then add inf - inf
        for relu in (False, True):
            for sums in (False, True):
                written = []
                for kernel in (K._pool2d_grad_max, _raising(F.pool2d_grad_max_rows)):
                    gx, left, acc = (
                        np.full(x.shape, 3, np.float32),
                        np.ones(c, np.float32),
                        np.full(c, 0.25, np.float32),
                    )
                    kernel(g, x, y, gx, left, acc, 1, 4, *window, relu, sums)
                    written.append((gx, left, acc))
                for what, a, b in zip(("gx", "left", "acc"), *written):
                    assert np.array_equal(_bits(a), _bits(b)), (what, relu, sums)


def test_the_numpy_forms_of_an_empty_output_write_nothing():
    """A 'valid' 2x2 pooling of a one-row map has no output rows (nor has an im2col of a batch
    part with no samples): the forms write nothing, as the kernels, and the gradient zeroes gx."""
    from kgraph.kernels import cpu as K, numpy_forms as F

    x, y = np.ones((2, 1, 6, 3), np.float32), np.zeros((2, 0, 3, 3), np.float32)
    F.pool2d_max_rows(x, y, 0, 2, 2, 2, 2, 2, 0, 0)
    gx, left, acc = np.full_like(x, 5), np.ones(3, np.float32), np.ones(3, np.float32)
    F.pool2d_grad_max_rows(y, x, y, gx, left, acc, 0, 2, 2, 2, 2, 2, 0, 0, True, True)
    assert not gx.any() and left.tolist() == acc.tolist() == [1, 1, 1]
    cols = np.full((2, 6, 6, 9), 7, np.float32)
    F.im2col_rows(np.ones((2, 6, 6, 1), np.float32), cols, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1)
    assert (cols == 7).all()
    gx_kernel = np.full_like(x, 5)
    K._pool2d_grad_max(y, x, y, gx_kernel, left.copy(), acc.copy(), 0, 2, 2, 2, 2, 2, 0, 0, True, True)
    np.testing.assert_array_equal(gx, gx_kernel)


def test_a_kernel_with_a_numpy_form_runs_it_until_the_kernel_is_compiled(monkeypatch):
    """serial.NumPyUntilCompiled: while steps compile in a child, the NumPy form runs for a kind of
    arguments until the kernel is compiled for them in this process or in Numba's cache (where
    the child puts it), then the compiled kernel; another kind of arguments waits for its own
    compiled form; where steps never compile (the suite's default), the kernel from the first
    call. float64 images: signatures no other test compiles."""
    import numba

    from kgraph.kernels import cpu as K
    from kgraph.runtime import background, serial

    ran, cached = [], set()
    monkeypatch.setattr(background, "in_disk_cache", lambda kernel, sig: sig in cached)
    monkeypatch.setattr(serial.NumPyUntilCompiled, "LOOK_EVERY", 0.0)
    monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "1")
    form = serial.NumPyUntilCompiled(K._im2col)
    monkeypatch.setattr(form, "numpy_form", lambda *a: ran.append(a[0].flags.c_contiguous) or K._im2col.numpy_form(*a))
    image = np.ones((2, 4, 4, 2))
    contiguous = (image, np.zeros((2, 4, 4, 18)), 0, 2, 3, 3, 1, 1, 1, 1, 1, 1)
    strided = (image[:, :, :, :1], np.zeros((2, 4, 4, 9))) + contiguous[2:]
    sig = tuple(numba.typeof(a) for a in contiguous)
    if sig not in K._im2col.overloads:  # the first time in this process
        form(*contiguous)
        assert ran == [True]
        cached.add(sig)  # the child has compiled it: loaded from the cache on the next look
    form(*contiguous)
    assert sig in K._im2col.overloads
    form(*strided)  # another kind of arguments: not compiled yet
    assert ran[-1] is False
    ran.clear()
    form(*contiguous)
    assert not ran  # compiled from then on
    monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "0")
    monkeypatch.setattr(K._im2col, "overloads", {})  # as if never compiled: it compiles, as any kernel
    assert serial.NumPyUntilCompiled(K._im2col)._available(strided)


def test_no_two_cpu_kernels_share_a_qualified_name():
    """Numba names a compiled function by its module, qualified name and a counter of the process
    that compiled it, and links same-named functions as one. Two kernels of one name with
    different bodies (a factory's closures: rnn_rows' `_ts` and `_any` rows) could so get the same
    symbol when compiled by two processes (the compile child, Numba's cache), and a process
    loading both ran one body for both: an LSTM with hard_sigmoid trained with the default
    LSTM's gradient (numba/numba#10486). Every kernel must have a name of its own."""
    from numba.core.registry import CPUDispatcher

    from kgraph.kernels import cpu, rnn_rows

    owners = {}
    for module in (cpu, rnn_rows):
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher):
                func = value.py_func
                owners.setdefault((func.__module__, func.__qualname__), set()).add(func)
    shared = {name: len(funcs) for name, funcs in owners.items() if len(funcs) > 1}
    assert not shared, f"kernels sharing a qualified name: {shared}"
    assert ("kgraph.kernels.rnn_rows", "lstm_grad_row_any") in owners
