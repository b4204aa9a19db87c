"""The benchmark suite: Keras 3 configs (as model.to_json() writes them) and how each is trained."""

from __future__ import annotations


def _dense(name, units, activation, inbound=None, width=None):
    layer = {
        "module": "keras.layers",
        "class_name": "Dense",
        "registered_name": None,
        "config": {
            "name": name,
            "trainable": True,
            "dtype": "float32",
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": {
                "module": "keras.initializers",
                "class_name": "GlorotUniform",
                "config": {"seed": None},
                "registered_name": None,
            },
            "bias_initializer": {
                "module": "keras.initializers",
                "class_name": "Zeros",
                "config": {},
                "registered_name": None,
            },
        },
    }
    if inbound is not None:
        layer["name"] = name
        layer["inbound_nodes"] = [{"args": [_tensor(inbound[0], width)], "kwargs": {}}]
    return layer


def _tensor(name, width):
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, width], "dtype": "float32", "keras_history": [name, 0, 0]},
    }


def sequential(name, n_in, layers):
    """layers: [(units, activation)]."""
    config = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "registered_name": None,
            "config": {"batch_shape": [None, n_in], "dtype": "float32", "sparse": False, "name": "input"},
        }
    ]
    config += [_dense(f"dense_{i}", u, a) for i, (u, a) in enumerate(layers)]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": name, "trainable": True, "dtype": "float32", "layers": config},
    }


def residual(name, n_in, width, blocks, n_out):
    """x -> Dense(width) -> [h + Dense(relu)(h)] * blocks -> Dense(n_out, softmax)."""
    layers = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "registered_name": None,
            "name": "input",
            "config": {"batch_shape": [None, n_in], "dtype": "float32", "sparse": False, "name": "input"},
            "inbound_nodes": [],
        },
        _dense("stem", width, "relu", ["input"], n_in),
    ]
    prev = "stem"
    for b in range(blocks):
        layers.append(_dense(f"block{b}", width, "relu", [prev], width))
        layers.append(
            {
                "module": "keras.layers",
                "class_name": "Add",
                "registered_name": None,
                "name": f"add{b}",
                "config": {"name": f"add{b}", "trainable": True, "dtype": "float32"},
                "inbound_nodes": [{"args": [[_tensor(prev, width), _tensor(f"block{b}", width)]], "kwargs": {}}],
            }
        )
        prev = f"add{b}"
    layers.append(_dense("head", n_out, "softmax", [prev], width))
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": None,
        "config": {
            "name": name,
            "trainable": True,
            "layers": layers,
            "input_layers": [["input", 0, 0]],
            "output_layers": [["head", 0, 0]],
        },
    }


def obj(cls, config):
    """A Keras 3 layer entry of a saved config."""
    return {"module": "keras.layers", "class_name": cls, "registered_name": None, "config": config}


def cnn(name):
    """The tutorials' CNN on 28x28x1: Conv2D(32, 3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(10, softmax)."""

    layers = [
        obj("InputLayer", {"batch_shape": [None, 28, 28, 1], "dtype": "float32", "name": "image"}),
        obj(
            "Conv2D",
            {
                "name": "conv",
                "filters": 32,
                "kernel_size": [3, 3],
                "strides": [1, 1],
                "padding": "valid",
                "data_format": "channels_last",
                "dilation_rate": [1, 1],
                "groups": 1,
                "activation": "relu",
                "use_bias": True,
                "kernel_initializer": {
                    "module": "keras.initializers",
                    "class_name": "GlorotUniform",
                    "config": {"seed": None},
                    "registered_name": None,
                },
                "bias_initializer": {
                    "module": "keras.initializers",
                    "class_name": "Zeros",
                    "config": {},
                    "registered_name": None,
                },
            },
        ),
        obj(
            "MaxPooling2D",
            {
                "name": "pool",
                "pool_size": [2, 2],
                "strides": [2, 2],
                "padding": "valid",
                "data_format": "channels_last",
            },
        ),
        obj("Flatten", {"name": "flatten", "data_format": "channels_last"}),
        _dense("dense", 10, "softmax"),
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": name, "trainable": True, "dtype": "float32", "layers": layers},
    }


def cnn_bn(name, filters=(32, 64, 128)):
    """A Fashion-MNIST-sized CNN on 28x28x1: three blocks of Conv2D(f, 3, same, no bias) ->
    BatchNormalization -> ReLU -> MaxPooling2D(2) (28 -> 14 -> 7 -> 3), then Flatten ->
    Dense(128, relu) -> Dense(10, softmax)."""

    layers = [obj("InputLayer", {"batch_shape": [None, 28, 28, 1], "dtype": "float32", "name": "image"})]
    for k, f in enumerate(filters, 1):
        layers += [
            obj(
                "Conv2D",
                {
                    "name": f"conv{k}",
                    "filters": f,
                    "kernel_size": [3, 3],
                    "strides": [1, 1],
                    "padding": "same",
                    "data_format": "channels_last",
                    "activation": "linear",
                    "use_bias": False,
                },
            ),
            obj("BatchNormalization", {"name": f"bn{k}", "axis": -1, "momentum": 0.99, "epsilon": 0.001}),
            obj("Activation", {"name": f"relu{k}", "activation": "relu"}),
            obj("MaxPooling2D", {"name": f"pool{k}", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"}),
        ]
    layers += [
        obj("Flatten", {"name": "flatten", "data_format": "channels_last"}),
        _dense("hidden", 128, "relu"),
        _dense("dense", 10, "softmax"),
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": name, "trainable": True, "dtype": "float32", "layers": layers},
    }


def lstm_text(name, vocab, dim, steps, units, n_out=2, cell="LSTM"):
    """A text classifier: word ids [steps] -> Embedding(vocab, dim) -> LSTM(units) (or `cell`: GRU,
    Keras 3's reset_after=True) -> Dense(n_out, softmax)."""

    layers = [
        obj("InputLayer", {"batch_shape": [None, steps], "dtype": "int32", "name": "words"}),
        obj("Embedding", {"name": "embedding", "input_dim": vocab, "output_dim": dim}),
        obj(cell, {"name": cell.lower(), "units": units, "activation": "tanh", "recurrent_activation": "sigmoid"}),
        _dense("dense", n_out, "softmax"),
    ]
    return {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": name, "trainable": True, "dtype": "float32", "layers": layers},
    }


def short_run(spec, steps=8) -> dict:
    """`spec` as a short run (issue #18): `steps` an epoch, every epoch timed, the first included,
    so that whatever the runtime spends deciding (the thread tuner's looks) counts in samples/s."""
    return {**spec, "steps": steps, "short": True}


MLP_B32 = dict(
    config=sequential("mlp", 784, [(128, "relu"), (10, "softmax")]),
    batch=32,
    optimizer=("adam", 1e-3),
    loss="sparse_categorical_crossentropy",
    steps=400,
    n_out=10,
)
WIDE = dict(
    config=sequential("wide", 1024, [(4096, "relu"), (4096, "relu"), (1024, "linear")]),
    batch=256,
    optimizer=("sgd", 1e-3),
    loss="mean_squared_error",
    steps=4,
    n_out=1024,
)

# name -> what to run: config, batch, optimizer (Keras name, learning rate), loss, steps per timed epoch
SUITE = {
    "mlp_784_128_10_b32_adam": MLP_B32,
    # a small step, whose thread setting the tuner times (a large GEMM's is not): a later program
    # starts from the choice the first one remembered
    "mlp_784_128_10_b32_adam_8_steps": short_run(MLP_B32),
    "mlp_784_128_10_b256_adam": dict(
        config=sequential("mlp", 784, [(128, "relu"), (10, "softmax")]),
        batch=256,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=100,
        n_out=10,
    ),
    "mlp_784_512_512_10_b128_adam": dict(
        config=sequential("mlp512", 784, [(512, "relu"), (512, "relu"), (10, "softmax")]),
        batch=128,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=60,
        n_out=10,
    ),
    "wide_1024_4096_4096_1024_b256_sgd": WIDE,
    "wide_1024_4096_4096_1024_b256_sgd_8_steps": short_run(WIDE),
    "residual_mlp_256x4_b64_adam": dict(
        config=residual("resmlp", 784, 256, 4, 10),
        batch=64,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=150,
        n_out=10,
    ),
    "cnn_28x28_conv32_b64_adam": dict(
        config=cnn("cnn"),
        batch=64,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=40,
        n_out=10,
    ),
    "cnn_bn_28x28_3blocks_b64_adam": dict(
        config=cnn_bn("cnn_bn"),
        batch=64,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=20,
        n_out=10,
    ),
    "cnn_bn_28x28_3blocks_b128_adam": dict(
        config=cnn_bn("cnn_bn"),
        batch=128,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=10,
        n_out=10,
    ),
    "lstm_text_20k_e128_t80_u128_b32_adam": dict(
        config=lstm_text("lstm_text", 20000, 128, 80, 128),
        batch=32,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=40,
        n_out=2,
        vocab=20000,
    ),
    "lstm_text_20k_e128_t80_u128_b128_adam": dict(
        config=lstm_text("lstm_text", 20000, 128, 80, 128),
        batch=128,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=10,
        n_out=2,
        vocab=20000,
    ),
    "gru_text_20k_e128_t80_u128_b32_adam": dict(
        config=lstm_text("gru_text", 20000, 128, 80, 128, cell="GRU"),
        batch=32,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=40,
        n_out=2,
        vocab=20000,
    ),
    "predict_784_128_10_b1024": dict(
        config=sequential("mlp", 784, [(128, "relu"), (10, "softmax")]),
        batch=1024,
        optimizer=("adam", 1e-3),
        loss="sparse_categorical_crossentropy",
        steps=40,
        n_out=10,
        predict=True,
    ),
}


def _cnn_macs(layers) -> int:
    """Multiply-adds per sample of a Sequential CNN's GEMMs: each Conv2D as its im2col GEMM
    (output pixels x kh*kw*in x filters), each Dense as in x out."""
    h, w, c = layers[0]["config"]["batch_shape"][1:]
    macs = 0
    for layer in layers[1:]:
        cls, cfg = layer["class_name"], layer["config"]
        if cls == "Conv2D":
            (kh, kw), (sh, sw) = cfg["kernel_size"], cfg["strides"]
            if cfg.get("padding") != "same":
                h, w = h - kh + 1, w - kw + 1
            h, w = -(-h // sh), -(-w // sw)
            macs += h * w * kh * kw * c * cfg["filters"]
            c = cfg["filters"]
        elif cls == "MaxPooling2D":
            h, w = h // cfg["pool_size"][0], w // cfg["pool_size"][1]
        elif cls == "Flatten":
            h, w, c = 1, 1, h * w * c
        elif cls == "Dense":
            macs += c * cfg["units"]
            c = cfg["units"]
    return macs


def gemm_flops_per_step(config, batch) -> float:
    """6 x batch x sum(in*out): forward, and the two backward GEMMs of every Dense layer
    (a Conv2D counts as its im2col GEMM)."""
    layers = config["config"]["layers"]
    if any(l["class_name"] == "Conv2D" for l in layers):
        return 6.0 * batch * _cnn_macs(layers)
    gates = {"LSTM": 4, "GRU": 3}.get(layers[2]["class_name"]) if len(layers) > 2 else None
    if gates:  # per time step: the input and recurrent GEMMs of every gate
        steps = layers[0]["config"]["batch_shape"][1]
        dim, units = layers[1]["config"]["output_dim"], layers[2]["config"]["units"]
        return 6.0 * batch * (steps * gates * units * (dim + units) + units * layers[3]["config"]["units"])
    widths = {}
    total = 0
    n_in = layers[0]["config"]["batch_shape"][-1]
    prev = n_in
    for layer in layers[1:]:
        if layer["class_name"] == "Dense":
            src = layer.get("inbound_nodes", [{}])[0].get("args", [None])[0] if "inbound_nodes" in layer else None
            fan_in = widths.get(src["config"]["keras_history"][0], n_in) if isinstance(src, dict) else prev
            total += fan_in * layer["config"]["units"]
            prev = widths[layer["config"]["name"]] = layer["config"]["units"]
        elif layer["class_name"] == "Add":
            widths[layer["config"]["name"]] = prev
    return 6.0 * batch * total
