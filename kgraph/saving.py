"""Keras's model and weight files, both ways: `.keras` archives (config.json + model.weights.h5),
legacy whole-model `.h5`, weight files (`.weights.h5` of Keras 3, `.h5` of Keras 2) and `.npz`.

Weights are matched by layer name (and the names of the nested models around it), so a file
written by Keras or by kgraph loads into the same model built from the same config. Every write
goes to a temporary file first, is fsynced and renamed: a crash never leaves half a file."""

from __future__ import annotations

import datetime
import io
import json
import math
import re
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ir.ops.optim import nadam_momentum_product

from . import limits
from .frontend.normalize import keras_major, snake_case
from .frontend.parse import parse_config_text
from .runtime.files import FileFormatError, atomic_write, read_npz_weights, write_npz_weights

KERAS_VERSION = "3.15.1"  # the format version written; Keras 3 reads archives of any 3.x
TF_KERAS_VERSION = "2.21.0"  # written in the .h5 of a Keras 2 config, which tf-keras 2 loads


def _h5py():
    try:
        import h5py
    except ImportError:  # h5py is an optional extra
        raise FileFormatError("reading and writing .h5 files needs h5py: pip install 'kgraph[h5]'") from None
    return h5py


# ---------------------------------------------------------------------- how Keras names things


def _unique(name, used):
    if name not in used:
        used[name] = 0
        return name
    used[name] += 1
    return f"{name}_{used[name]}"


def _keras_layers(desc):
    """A model's `layers` as Keras 3 lists them (Sequential leaves out its InputLayer)."""
    return [l for l in desc.layers if not (desc.class_name == "Sequential" and l.class_name == "InputLayer")]


def _class_of(layer):
    return "Functional" if layer.model is not None and layer.class_name == "Model" else layer.class_name


def weights_by_layer(model) -> dict:
    """(enclosing model names..., layer name) -> the model's weights of that layer, in order."""
    out = {}
    for spec, value in zip(model.frontend.weights, model.get_weights()):
        out.setdefault((*spec.path, spec.layer), []).append((spec, value))
    return out


# ---------------------------------------------------------------------- Keras 3 weights (.weights.h5)


def _cell_groups(layer) -> list:
    """[(group path, variable count)] where Keras 3 keeps a recurrent layer's variables: its cell's
    group (a Bidirectional: the forward layer's cell, then the backward layer's; an RNN over
    StackedRNNCells: cell/cells/<each cell's snake_case class name, made unique>; a
    TimeDistributed: its layer's group; a MultiHeadAttention: its query, key, value and output
    EinsumDense groups); [("", None)]
    (the layer's own vars, all of them) for any other layer."""
    cfg = layer.config if isinstance(layer.config, dict) else {}

    def count(c):
        return 3 if (c or {}).get("use_bias", True) else 2

    if layer.class_name == "TimeDistributed":
        return [("layer", None)]
    if layer.class_name == "MultiHeadAttention":  # its EinsumDense sublayers, kernel then bias
        n = 2 if cfg.get("use_bias", True) else 1
        return [(f"{part}_dense", n) for part in ("query", "key", "value", "output")]
    if layer.class_name in ("SimpleRNN", "LSTM", "GRU"):
        return [("cell", count(cfg))]
    if layer.class_name == "Bidirectional":
        fwd = (cfg.get("layer") or {}).get("config")
        bwd = (cfg.get("backward_layer") or {}).get("config", fwd)
        return [("forward_layer/cell", count(fwd)), ("backward_layer/cell", count(bwd))]
    if layer.class_name == "RNN":
        cell = cfg.get("cell") or {}
        if cell.get("class_name") != "StackedRNNCells":
            return [("cell", count(cell.get("config")))]
        used = {}
        return [
            (f"cell/cells/{_unique(snake_case(c.get('class_name', '')), used)}", count(c.get("config")))
            for c in (cell.get("config") or {}).get("cells", [])
        ]
    return [("", None)]


def _write_vars(sub, layer, values):
    start = 0
    for where, n in _cell_groups(layer):
        group = sub
        for key in filter(None, where.split("/")):
            group = group.require_group(key)
            group.require_group("vars")  # Keras 3 gives every layer a vars group, empty or not
        chunk = values[start:] if n is None else values[start : start + n]
        start += len(chunk)
        for i, value in enumerate(chunk):
            group["vars"].create_dataset(str(i), data=value)


def _read_vars(sub, layer) -> list:
    out = []
    for where in dict.fromkeys(["", *(w for w, _ in _cell_groups(layer))]):
        group = sub.get(where) if where else sub
        if group is None and where:
            group = sub.get("_" + where)  # tf-keras's .keras archive: _query_dense, ...
        if group is not None and "vars" in group:
            out += [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
    return out


def _write_keras3_layers(group, desc, path, weights):
    used = {}
    layers = group.create_group("layers")
    for layer in _keras_layers(desc):
        sub = layers.create_group(_unique(snake_case(_class_of(layer)), used))
        var_group = sub.create_group("vars")
        var_group.attrs["name"] = layer.name
        if layer.model is not None:
            _write_keras3_layers(sub, layer.model, path + (layer.name,), weights)
        else:
            _write_vars(sub, layer, [value for _, value in weights.get((*path, layer.name), [])])


def _read_keras3_layers(group, desc, path=(), unmatched=None, groups=None, at=()) -> dict:
    """{layer path: arrays} of a Keras 3 weights tree. Its groups are named as Keras names the
    model's layers: snake_case class name, made unique in the model's order (dense, dense_1, ...).
    A group is matched by that name, its place among the layers of its class, as Keras itself
    reads it: whatever the layers are called (Keras 3 and kgraph also record each layer's name,
    which a group is matched by only where its place names no layer of the model, and only to a
    layer that no group's place names). `unmatched`
    (a list) receives the paths of the groups no layer matched, and `groups` (a dict) the group
    each layer path was read from (`at`: this group's path in the file), for the errors that follow."""
    out, used, by_key = {}, {}, {}
    for layer in _keras_layers(desc):
        by_key[_unique(snake_case(_class_of(layer)), used)] = layer
    placed = {id(by_key[key]) for key in group.get("layers", {}) if key in by_key}
    by_name = {layer.name: layer for layer in desc.layers if id(layer) not in placed}
    for key in group.get("layers", {}):
        sub = group["layers"][key]
        name = sub["vars"].attrs.get("name") if "vars" in sub else None
        layer = by_key.get(key) or (by_name.get(_text(name)) if name is not None else None)
        if layer is None:
            if unmatched is not None:
                unmatched.append("/".join((*at, "layers", key)))
            continue  # a layer the model lacks: _assign_by_layer names what is missing
        if layer.model is not None and "layers" in sub:
            out.update(
                _read_keras3_layers(sub, layer.model, path + (layer.name,), unmatched, groups, (*at, "layers", key))
            )
        elif _read_vars(sub, layer):
            out[(*path, layer.name)] = _read_vars(sub, layer)
            if groups is not None:
                groups[(*path, layer.name)] = "/".join((*at, "layers", key))
    return out


def _assign_keras3(model, h5file, source):
    """Set the model's weights from a Keras 3 weights tree (a .weights.h5, a .keras archive's)."""
    unmatched, groups = [], {}
    found = _read_keras3_layers(h5file, model.frontend.desc, unmatched=unmatched, groups=groups)
    _assign_by_layer(model, found, False, source, unmatched, groups)


def _write_keras3_weights(h5file, model, include_optimizer):
    _write_keras3_layers(h5file, model.frontend.desc, (), weights_by_layer(model))
    top = h5file.create_group("vars")
    top.attrs["name"] = model.name
    if include_optimizer and model.optimizer is not None:
        opt = h5file.create_group("optimizer").create_group("vars")
        opt.attrs["name"] = model.optimizer.name
        for i, value in enumerate(optimizer_variables(model)):
            opt.create_dataset(str(i), data=value)
        h5file.attrs[RANDOM_STATE] = random_state(model)


# ---------------------------------------------------------------------- the random streams

RANDOM_STATE = "kgraph_random_state"  # a root attribute, beside the optimizer state; Keras ignores it


def random_state(model) -> str:
    """The random streams' state (dropout and noise draws; shuffling, which under MPI is a stream of
    its own) as JSON: with it a run resumed from a checkpoint draws what the straight run draws."""
    rng = model.executable.random
    shuffle = model.shuffle_random if model.shuffle_random is not rng else None
    return json.dumps({"random": rng.bit_generator.state, "shuffle": shuffle and shuffle.bit_generator.state})


def _restore_random(model, h5file, source) -> None:
    text = h5file.attrs.get(RANDOM_STATE)
    if text is None or model.compile_args is None:
        return
    try:
        saved = json.loads(_text(text))
        model.executable.random.bit_generator.state = saved["random"]
        if saved.get("shuffle") is not None and model.shuffle_random is not model.executable.random:
            model.shuffle_random.bit_generator.state = saved["shuffle"]
    except (ValueError, TypeError, KeyError, AttributeError):
        warnings.warn(
            f"{source}: the saved random state is unreadable; dropout and shuffling start a new stream", stacklevel=4
        )


# ---------------------------------------------------------------------- Keras 2 / legacy h5


class _NamedArrays(list):
    """A layer group's arrays in its weight_names order, with those names (`names`)."""

    def __init__(self, arrays, names):
        super().__init__(arrays)
        self.names = names


def _read_legacy_layers(group, source) -> dict:
    """{top-level layer name: [arrays in weight_names order]} of a legacy weights group."""
    out = {}
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("layer_names", [])]
    for name in names:
        if not isinstance(group.get(name), _h5py().Group):
            raise FileFormatError(f"{source}: layer {name!r} is listed in the file but its weights group is missing")
        g = group[name]
        wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
        for w in wnames:  # a weight name is its dataset's path in g
            if not isinstance(g.get(w), _h5py().Dataset):
                raise FileFormatError(f"{source}: weight {w!r} of layer {name!r} is listed in the file but missing")
        if wnames:
            out[name] = _NamedArrays((np.asarray(g[w]) for w in wnames), wnames)
    return out


def _by_name(arrays, items):
    """A nested model's arrays in the model's order of its weights (`items`), matched by the
    names the file gives them (<layer>/<weight>:0): tf-keras lists a trainable nested model's
    trainable weights first, then its batch norms' moving statistics, where a frozen one lists
    them by layer. As the file has them where the names do not match one for one."""
    names = getattr(arrays, "names", None)
    if not names or len(names) != len(items):
        return arrays
    keyed = {}
    for n, a in zip(names, arrays):
        parts = n.split(":")[0].split("/")
        keyed[tuple(parts[-2:])] = a
    wanted = [(spec.layer, spec.name) for spec, _ in items]
    if len(keyed) != len(items) or any(k not in keyed for k in wanted):
        return arrays
    return [keyed[k] for k in wanted]


def _write_legacy_layers(group, model, version=KERAS_VERSION):
    weights = weights_by_layer(model)
    names = [l.name for l in model.frontend.desc.layers]
    group.attrs["layer_names"] = np.array([n.encode() for n in names])
    group.attrs["backend"] = "tensorflow"
    group.attrs["keras_version"] = version
    for name in names:
        g = group.create_group(name)
        owned = [(spec, v) for key, items in weights.items() if key[0] == name for spec, v in items]
        # Keras reads a group in its layer's trainable_weights + non_trainable_weights order: a
        # trainable nested model's batch-norm statistics after all its trainable weights
        owned.sort(key=lambda item: not item[0].trainable)
        wnames = ["/".join((*spec.path, spec.layer, spec.name)) for spec, _ in owned]
        g.attrs["weight_names"] = np.array([w.encode() for w in wnames])
        for w, (_, value) in zip(wnames, owned):
            g.create_dataset(w, data=value)


# ---------------------------------------------------------------------- matching weights to a model


def _assign_by_layer(model, found: dict, legacy: bool, source: str, unmatched=(), groups=None):
    """Set the model's weights from {layer key: arrays}, naming the first mismatch (and the file's
    groups that matched no layer: `unmatched`; the group a layer's weights came from, where its name
    differs: `groups`)."""
    weights = []
    by_layer = weights_by_layer(model)
    if legacy:  # keyed by the top-level layer only: the nested model's weights in its own order
        grouped = {}
        for key, items in by_layer.items():
            grouped.setdefault(key[0], []).extend(items)
        by_layer = {(k,): v for k, v in grouped.items()}
        found = {(k,): _by_name(v, grouped.get(k, ())) for k, v in found.items()}
    for key, items in by_layer.items():
        arrays = found.get(key)
        where = "/".join(key)
        if arrays is None:
            filled = sorted("/".join(k) for k in found)
            if legacy:  # a Keras 2 file: its groups are named by the layers
                raise FileFormatError(f"{source}: no weights for layer {where!r}; the file has {filled}")
            raise FileFormatError(
                f"{source}: no weights for layer {where!r}; the file's groups fill this model's layers {filled}"
                + (f", and its groups {sorted(unmatched)} fill none of them" if unmatched else "")
            )
        read_from = (groups or {}).get(key)
        in_file = f"the file's group {read_from}" if read_from and read_from.split("/")[-1] != key[-1] else "the file"
        if len(arrays) != len(items):
            raise FileFormatError(
                f"{source}: layer {where!r} has {len(arrays)} weights in {in_file}, the model expects {len(items)}"
            )
        for (spec, current), value in zip(items, arrays):
            if tuple(value.shape) != tuple(current.shape):
                raise FileFormatError(
                    f"{source}: weight {where}/{spec.name} has shape {tuple(value.shape)} "
                    f"in {in_file}, the model expects {tuple(current.shape)}"
                )
    order = {id(spec): i for i, spec in enumerate(model.frontend.weights)}
    for key, items in by_layer.items():
        for (spec, _), value in zip(items, found[key]):
            weights.append((order[id(spec)], value))
    model.set_weights([v for _, v in sorted(weights, key=lambda t: t[0])])


# ---------------------------------------------------------------------- optimizer state

# the order Keras 3 creates slots in: calls of add_optimizer_variables, each interleaving its names per variable
KERAS_SLOT_ORDER = {
    "sgd": [["momentum"]],
    "adam": [["m", "v"], ["v_hat"]],
    "rmsprop": [["velocity"], ["momentum"], ["average_gradient"]],
    "adagrad": [["accumulator"]],
    "adadelta": [["accumulated_grad", "accumulated_delta_var"]],
    "adamax": [["m", "u"]],
    "lion": [["momentum"]],
    "ftrl": [["accumulator", "linear"]],
    "nadam": [["m", "v"]],  # then Keras 3's u_product, a scalar (optimizer_variables)
}
KERAS_SLOT_NAMES = {"m": "momentum", "v": "velocity", "u": "norm", "v_hat": "velocity_hat"}


# tf.keras's OptimizerV2 (the legacy optimizers of tf.keras 2.11+, every optimizer before) creates
# one slot name at a time over all variables: all m, then all v
V2_SLOT_ORDER = {kind: [[name] for call in calls for name in call] for kind, calls in KERAS_SLOT_ORDER.items()}


def _slot_sequence(model, order=KERAS_SLOT_ORDER):
    """[(slot name, param node)] in Keras's optimizer.variables order (after iteration, lr)."""
    state = model.executable.state_manifest.state
    present = {s.slot for s in state}
    # the weights the optimizer has state for: those trainable at compile() (Keras's optimizer
    # keeps its variables when layer.trainable changes, until the next compile())
    with_state = {s.param for s in state}
    params = [w.node for w in model.frontend.weights if w.node in with_state]
    if model.optimizer.kind not in order or (order is V2_SLOT_ORDER and model.optimizer.kind == "nadam"):
        raise FileFormatError(  # OptimizerV2's Nadam keeps a momentum cache among its weights
            f"saving or loading {type(model.optimizer).__name__}'s state in Keras's layout "
            f"is not supported yet; save with include_optimizer=False"
        )
    calls = order[model.optimizer.kind]
    if order is KERAS_SLOT_ORDER:  # use_ema's averages, then the gradient sums: the base class's build's
        calls = [["average"], ["gradient_accumulator"], *calls]
    return [(name, p) for call in calls if set(call) <= present for p in params for name in call]


def optimizer_variables(model) -> list:
    """Keras's optimizer.variables: iteration, learning_rate (a variable unless the rate is a
    schedule), then the slots."""
    m = model.executable.state_manifest
    state = {(s.slot, s.param): s for s in m.state}
    out = [np.array(model.optimizer.step_count, np.int64)]
    if not model.optimizer.scheduled:
        out.append(np.array(model.optimizer.learning_rate, np.float32))
    for key in _slot_sequence(model):
        out.append(m.state_view(model.executable.state, state[key]).copy())
    if model.optimizer.kind == "nadam":  # Keras 3's u_product, which kgraph computes from the updates
        beta_1 = model.optimizer.hyper["beta_1"]
        out.append(np.array(nadam_momentum_product(beta_1, model.optimizer.iterations), np.float32))
    return out


def _restore_optimizer(model, h5file, source):
    """The optimizer's variables of a Keras 3 weights file, when the model is compiled."""
    if model.compile_args is not None and "optimizer" in h5file and "vars" in h5file["optimizer"]:
        opt = h5file["optimizer"]["vars"]
        if len(opt):
            load_optimizer_state(model, [np.asarray(opt[str(i)]) for i in range(len(opt))], None, source)


def _layout(values, names):
    """How the file lists the optimizer's variables: "keras3" (iteration, learning_rate, slots),
    "tf2" (iteration, slots: tf-keras 2's optimizers, and Keras 3's where the rate is a schedule)
    or "v2" (OptimizerV2: iter, slots by name)."""
    if names and re.search(r"(^|/)iter(ations)?(:0)?$", names[0]):
        return "v2"
    if len(values) > 1 and np.ndim(values[1]) == 0:
        return "keras3"
    return "tf2"


def _without_u_product(model, slots, sequence):
    """Keras 3's Nadam saves its momentum product, a scalar, after the slots (tf-keras's does not):
    kgraph computes it from the iteration count."""
    if model.optimizer.kind == "nadam" and len(slots) == len(sequence) + 1 and np.ndim(slots[-1]) == 0:
        return slots[:-1]
    return slots


def _fits(model, slots, sequence) -> bool:
    state = {(s.slot, s.param): s for s in model.executable.state_manifest.state}
    return len(slots) == len(sequence) and all(tuple(np.shape(v)) == state[k].shape for k, v in zip(sequence, slots))


def load_optimizer_state(model, values, names, source):
    """Set the compiled model's optimizer state from a file's variables in any Keras's layout.
    State that does not map onto this optimizer is left fresh, with one warning: the weights
    load whatever the optimizer state."""
    if model.compile_args is None or not values:
        return
    layout = _layout(values, names)
    iterations = int(np.asarray(values[0]))
    try:
        sequence = _slot_sequence(model, V2_SLOT_ORDER if layout == "v2" else KERAS_SLOT_ORDER)
    except FileFormatError as e:
        return _fresh(model, source, str(e).split(";")[0])
    if layout == "keras3" and not _fits(model, _without_u_product(model, values[2:], sequence), sequence):
        # a scalar second value is a learning-rate variable, or (where the rate is a schedule) the
        # slot of a scalar weight (Attention's scale): the layout is the one the slots fit
        if _fits(model, _without_u_product(model, values[1:], sequence), sequence):
            layout = "tf2"
    header = 2 if layout == "keras3" else 1
    slots = values[header:]
    if layout != "v2":
        slots = _without_u_product(model, slots, sequence)
    extra = slots[len(sequence) :]
    if (
        layout == "v2"
        and sequence
        and len(extra) == len({p for _, p in sequence})
        and all(np.shape(v) == (1,) for v in extra)
    ):
        slots = slots[: len(sequence)]  # Keras 2.2-2.3's Adam keeps a (1,) stand-in vhat per weight without amsgrad
    if sequence and not slots and iterations:
        return _fresh(model, source, f"the file has no slot variables after {iterations} iterations")
    if sequence and slots:
        if len(slots) != len(sequence):
            return _fresh(
                model,
                source,
                f"the file has {len(slots)} slot variables, {model.optimizer.name} here has {len(sequence)}",
            )
        m = model.executable.state_manifest
        state = {(s.slot, s.param): s for s in m.state}
        for key, value in zip(sequence, slots):
            if tuple(np.shape(value)) != state[key].shape:
                return _fresh(
                    model,
                    source,
                    f"slot {key[0]} of {key[1]} has shape {np.shape(value)} in the file, {state[key].shape} here",
                )
        for key, value in zip(sequence, slots):
            m.state_view(model.executable.state, state[key])[...] = np.reshape(value, state[key].shape)
    if model.optimizer.use_ema and iterations and not any(slot == "average" for slot, _ in sequence):
        model.executable.fill_slot("average")  # a file without averages (OptimizerV2's): from the weights
    model.optimizer.step_count = iterations  # no slots here (SGD without momentum) or none saved yet
    if header == 2 and not model.optimizer.scheduled:
        saved = np.float32(values[1])  # a schedule recomputes it; Keras keeps the rate as float32:
        if np.float32(model.optimizer.learning_rate) != saved:  # the config's exact rate stands if it rounds to it
            model.optimizer.learning_rate = float(saved)


def _fresh(model, source, why):
    warnings.warn(f"{source}: the optimizer state was not loaded ({why}); the optimizer starts fresh", stacklevel=4)


# ---------------------------------------------------------------------- public entry points


def save_weights(model, filepath):
    """By extension: .weights.h5 (Keras 3), .h5 (Keras 2 layout), else .npz; atomically."""
    name = str(filepath)
    with atomic_write(filepath) as tmp:
        if name.endswith(".weights.h5"):  # with the optimizer's variables, as Keras 3 writes it
            with _h5py().File(tmp, "w") as f:
                _write_keras3_weights(f, model, include_optimizer=model.compile_args is not None)
        elif name.endswith((".h5", ".hdf5")):
            with _h5py().File(tmp, "w") as f:
                _write_legacy_layers(f, model)
        else:
            write_npz_weights(tmp, model.get_weights())


def load_weights(model, filepath):
    name = str(filepath)
    if not Path(name).exists():
        raise FileFormatError(f"{name}: no such weights file")
    if name.endswith((".h5", ".hdf5")):
        with _open_h5(name) as f:
            limits.check_h5(f, name)
            if "layers" in f:
                _restore_keras3(model, f, name)
            else:
                group = f["model_weights"] if "model_weights" in f else f
                _assign_by_layer(model, _read_legacy_layers(group, name), True, name)
        return
    if name.endswith(".keras"):  # a whole model's archive: its weights, as Keras 3 loads them
        return _load_archive_weights(model, name)
    try:
        model.set_weights(read_npz_weights(name))
    except FileFormatError:
        raise
    except ValueError as e:  # a data file, or another model's weights
        raise FileFormatError(f"{name}: {e}") from None


@contextmanager
def _open_h5(path, source=None):
    h5py = _h5py()
    source = source or path
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FileFormatError(f"{source}: not a readable HDF5 file ({e})") from None
    try:
        yield f
    except (KeyError, OSError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        if isinstance(e, FileFormatError):
            raise
        raise FileFormatError(f"{source}: unexpected layout ({type(e).__name__}: {e})") from None
    finally:
        f.close()


def save_model(model, filepath, include_optimizer=True):
    """`.keras` archive (config.json, metadata.json, model.weights.h5) or legacy `.h5`."""
    name = str(filepath)
    config = dict(model.frontend.config)
    compile_config = _compile_config(model)
    with atomic_write(filepath) as tmp:
        if name.endswith((".h5", ".hdf5")):
            # a Keras 2 config (tf-keras 2 wrote it, or it was read from such a file) is saved as
            # tf-keras 2 saves it, so that tf-keras loads it compiled and resumes its optimizer
            tf_keras = keras_major(config) == 2
            with _h5py().File(tmp, "w") as f:
                f.attrs["model_config"] = json.dumps(config)
                f.attrs["keras_version"] = TF_KERAS_VERSION if tf_keras else KERAS_VERSION
                f.attrs["backend"] = "tensorflow"
                if compile_config:
                    training = _legacy_training_config(compile_config, tf_keras, model.info.get("metrics"))
                    f.attrs["training_config"] = json.dumps(training)
                _write_legacy_layers(f.create_group("model_weights"), model, f.attrs["keras_version"])
                if include_optimizer and compile_config:
                    g = f.create_group("optimizer_weights")
                    names, values = _legacy_optimizer_weights(model, tf_keras)
                    g.attrs["weight_names"] = np.array([n.encode() for n in names])
                    for n, v in zip(names, values):
                        g.create_dataset(n, data=v)
                    f.attrs[RANDOM_STATE] = random_state(model)
            return
        config = _archive_config(config)
        if compile_config:
            config["compile_config"] = compile_config
        buf = io.BytesIO()
        with _h5py().File(buf, "w") as f:
            _write_keras3_weights(f, model, include_optimizer and bool(compile_config))
        metadata = {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
        with zipfile.ZipFile(tmp, "w") as z:
            z.writestr("metadata.json", json.dumps(metadata))
            z.writestr("config.json", json.dumps(config))
            z.writestr("model.weights.h5", buf.getvalue())


def _archive_config(config):
    """A .keras archive's top-level object names its module; a config read from a legacy .h5 may not."""
    if "module" in config:
        return config
    module = "keras.src.models.functional" if config.get("class_name") == "Functional" else "keras"
    return {"module": module, **config, "registered_name": None}


def _metrics_config(metrics):
    """compile()'s metrics as Keras serializes them: a metric object as its class and config."""
    from .runtime.metrics import Metric

    if isinstance(metrics, Metric):
        config = metrics.get_config()
        return {
            "module": "keras.metrics",
            "class_name": type(metrics).__name__,
            "config": config,
            "registered_name": None,
        }
    if isinstance(metrics, (list, tuple)):
        return [_metrics_config(m) for m in metrics]
    if isinstance(metrics, dict):
        return {k: _metrics_config(v) for k, v in metrics.items()}
    return metrics


def _compile_config(model):
    if model.compile_args is None:
        return None
    opt = model.optimizer
    return {
        "optimizer": {
            "module": "keras.optimizers",
            "class_name": type(opt).__name__,
            "config": opt.get_config(),
            "registered_name": None,
        },
        "loss": model.compile_args["loss_config"],
        "loss_weights": model.compile_args.get("loss_weights"),
        "metrics": _metrics_config(model.compile_args["metrics"]),
        "weighted_metrics": None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


ACCURACIES = ("BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy")


def _legacy_training_config(compile_config, tf_keras=False, resolved=None):
    """tf_keras: as tf-keras 2 writes it, whose loader builds its legacy optimizers (which refuse
    weight_decay) from a config without `is_legacy_optimizer: False`, and reads a bare "accuracy"
    of a saved model otherwise than compile() does: a one-output model's metrics are written as
    tf-keras writes them, a list for the output, "accuracy" as the accuracy it resolved to
    (`resolved`: the model's metrics per output, models.py _resolve_metrics)."""
    out = {k: v for k, v in compile_config.items() if k != "optimizer"}
    config = dict(compile_config["optimizer"]["config"])
    if tf_keras:
        config["is_legacy_optimizer"] = False
        metrics = out.get("metrics")
        if isinstance(metrics, list) and resolved and len(resolved) == 1 and len(resolved[0]) == len(metrics):
            out["metrics"] = [[_tf_keras_metric(m, r) for m, r in zip(metrics, resolved[0])]]
    out["optimizer_config"] = {"class_name": compile_config["optimizer"]["class_name"], "config": config}
    return out


def _tf_keras_metric(given, resolved):
    if isinstance(given, str) and resolved["class"] in ACCURACIES:
        fn = snake_case(resolved["class"])
        return {"class_name": "MeanMetricWrapper", "config": {"name": given, "dtype": "float32", "fn": fn}}
    return given


def _legacy_optimizer_weights(model, tf_keras=False):
    """(names, values) of the optimizer's variables in a .h5: Keras 3's (iteration, learning_rate,
    slots), or tf-keras 2's, which keeps no learning-rate variable (iteration, slots), by its
    names (tf-keras reads them in order)."""
    prefix, sequence = model.optimizer.name, _slot_sequence(model)
    values = optimizer_variables(model)
    header = 1 if model.optimizer.scheduled else 2  # (iteration, rate)
    if tf_keras:  # (tf-keras's Nadam keeps no u_product variable)
        names = ["iteration:0"] + [f"{prefix}/{slot}/{param}:0" for slot, param in sequence]
        return names, values[:1] + values[header : header + len(sequence)]
    names = [f"{prefix}/iteration", f"{prefix}/learning_rate"][:header]
    names += [f"{prefix}/{param}_{KERAS_SLOT_NAMES.get(slot, slot)}" for slot, param in sequence]
    return names + [f"{prefix}/variable"] * (len(values) - len(names)), values


def _load_archive_weights(model, name):
    """Set a built model's weights, and its optimizer state if compiled, from .keras archive `name`."""
    fm = model.frontend  # built from the config: what its weights take bounds the member
    cap = fm and limits.weights_file_bytes(
        sum(math.prod(w.shape) for w in fm.weights) * np.dtype(fm.dtype).itemsize, len(fm.weights)
    )
    try:
        with zipfile.ZipFile(name) as z:
            weights_bytes = limits.read_member(
                z, "model.weights.h5", name, cap=cap, bound="this model's weights and optimizer state could take"
            )
    except FileFormatError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise FileFormatError(f"{name}: not a readable .keras archive ({e})") from None
    with _open_h5(io.BytesIO(weights_bytes), f"{name}: model.weights.h5") as f:
        limits.check_h5(f, name)
        _restore_keras3(model, f, name)


def _restore_keras3(model, f, name):
    """Weights, optimizer state (when compiled) and random streams from a Keras 3 weights file."""
    _assign_keras3(model, f, name)
    _restore_optimizer(model, f, name)
    _restore_random(model, f, name)


def read_model_file(filepath):
    """(config, compile config or None, weights reader) of a .keras archive or a legacy .h5.
    The reader sets a built model's weights and, if compiled, its optimizer state."""
    name = str(filepath)
    if not Path(name).exists():
        raise FileFormatError(f"{name}: no such model file")
    if name.endswith(".keras"):
        try:
            with zipfile.ZipFile(name) as z:  # each member's size is checked before it is inflated
                text = limits.read_member(z, "config.json", name, "KGRAPH_MAX_CONFIG_BYTES")
                z.getinfo("model.weights.h5")  # read once the model is built: its size bounds the member's
        except FileFormatError:
            raise
        except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise FileFormatError(f"{name}: not a readable .keras archive ({e})") from None
        config = parse_config_text(text, "json", f"{name}: config.json")
        compile_config = _saved_compile_arguments(config.pop("compile_config", None), name)

        def restore(model):
            _load_archive_weights(model, name)

        return config, compile_config, restore
    with _open_h5(name) as f:
        limits.check_h5(f, name)
        if "model_config" not in f.attrs:
            raise FileFormatError(
                f"{name}: has no model_config: a weights file, not a whole model (load the config and use load_weights)"
            )
        config = parse_config_text(_text(f.attrs["model_config"]), "json", f"{name}: model_config")
        training = (
            parse_config_text(_text(f.attrs["training_config"]), "json", f"{name}: training_config")
            if "training_config" in f.attrs
            else None
        )
    compile_config = None
    if training:
        compile_config = {
            "optimizer": training.get("optimizer_config"),
            "loss": training.get("loss"),
            "metrics": _flat_metrics(training.get("metrics")),
            "loss_weights": training.get("loss_weights"),
        }
        compile_config = _saved_compile_arguments(compile_config, name)

    def restore(model):
        with _open_h5(name) as f:
            limits.check_h5(f, name)
            if not isinstance(f.get("model_weights"), _h5py().Group):
                raise FileFormatError(f"{name}: has a model_config but no model_weights group")
            _assign_by_layer(model, _read_legacy_layers(f["model_weights"], name), True, name)
            if model.compile_args is not None and "optimizer_weights" in f:
                g = f["optimizer_weights"]
                names = [_text(n) for n in g.attrs.get("weight_names", [])]
                load_optimizer_state(model, [np.asarray(g[n]) for n in names], names, name)
            _restore_random(model, f, name)

    return config, compile_config, restore


def _saved_compile_arguments(section, source):
    """_compile_arguments of a file's compile_config, which may be anything: one that is not
    understood loads the model uncompiled with a one-line warning, as an unsupported one does."""
    try:
        if section is not None and not isinstance(section, dict):
            raise TypeError(f"a {type(section).__name__}, not a mapping")
        return _compile_arguments(section, source)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        warnings.warn(
            f"{source}: the model is loaded uncompiled: its compile_config is not understood "
            f"({type(e).__name__}: {str(e)[:200]})",
            stacklevel=3,
        )
        return None


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------- the saved compile arguments


def _class_name(entry) -> str:
    """The class of a registered name in any of Keras's spellings: "Custom>Adam" (tf-keras 2's .h5),
    "keras.optimizers.Adam", "keras.optimizers.legacy.Adam" (or a module key beside it)."""
    return re.split(r"[>.]", str(entry))[-1]


def _optimizer_arguments(opt):
    """A saved optimizer as kgraph.optimizers.get takes it. tf.keras's legacy optimizers write `lr`
    for learning_rate, and `decay`, a rate lr / (1 + decay * iterations): InverseTimeDecay."""
    if not isinstance(opt, dict):
        return _class_name(opt) if isinstance(opt, str) else opt
    config = dict(opt.get("config") or {})
    lr = config.pop("lr", None)
    if lr is not None:
        config.setdefault("learning_rate", lr)
    decay = config.pop("decay", 0.0) or 0.0
    if decay and not isinstance(config.get("learning_rate"), dict):
        config["learning_rate"] = {
            "class_name": "InverseTimeDecay",
            "config": {
                "initial_learning_rate": config.get("learning_rate", 0.001),
                "decay_steps": 1,
                "decay_rate": decay,
            },
        }
    return {"class_name": _class_name(opt.get("class_name", "")), "config": config}


def _loss_arguments(loss):
    if isinstance(loss, str):
        return _class_name(loss)
    if isinstance(loss, list):
        return [_loss_arguments(l) for l in loss]
    if isinstance(loss, dict) and "class_name" not in loss:
        return {k: _loss_arguments(v) for k, v in loss.items()}
    if isinstance(loss, dict):
        config = loss.get("config")
        if isinstance(config, dict):  # tf-keras 2 adds the function's name (fn) and "auto"
            config = {k: v for k, v in config.items() if k != "fn"}
        return {"class_name": _class_name(loss["class_name"]), "config": config}
    return loss


def _metric_arguments(metric):
    """tf-keras 2 writes "accuracy" as a MeanMetricWrapper of the accuracy it resolved (sometimes
    before it knew the labels): its name is what the user asked for."""
    if isinstance(metric, dict) and metric.get("class_name") == "MeanMetricWrapper":
        return (metric.get("config") or {}).get("name") or (metric.get("config") or {}).get("fn")
    if isinstance(metric, list):
        return [_metric_arguments(m) for m in metric]
    if isinstance(metric, dict) and "class_name" not in metric:
        return {k: _metric_arguments(v) for k, v in metric.items()}
    return metric


def _compile_arguments(compile_config, source):
    """The saved compile arguments in forms kgraph reads; None, with a warning, when kgraph
    cannot run the optimizer or loss (the model then loads uncompiled, as Keras does)."""
    if not compile_config or not compile_config.get("optimizer") or compile_config.get("loss") is None:
        return None
    from . import losses, optimizers

    out = dict(
        compile_config,
        optimizer=_optimizer_arguments(compile_config["optimizer"]),
        loss=_loss_arguments(compile_config["loss"]),
        metrics=_metric_arguments(_flat_metrics(compile_config.get("metrics"))),
    )
    try:
        optimizers.get(out["optimizer"])
        weights = out.get("loss_weights")
        values = weights.values() if isinstance(weights, dict) else weights if isinstance(weights, list) else [weights]
        if weights is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"loss_weights {weights!r} are not numbers")
        loss = out["loss"]
        for one in (
            loss.values()
            if isinstance(loss, dict) and "class_name" not in loss
            else loss
            if isinstance(loss, list)
            else [loss]
        ):
            if one is not None:
                losses.get(one)
    except (ValueError, TypeError) as e:
        warnings.warn(
            f"{source}: the model is loaded uncompiled: its saved compile arguments are not "
            f"supported ({e}); call compile() with ones kgraph supports",
            stacklevel=3,
        )
        return None
    out["metrics"] = _known_metrics(out["metrics"], source)
    return out


def _known_metrics(metrics, source):
    """The saved metrics less those kgraph cannot compute (a metric object with options it lacks),
    each dropped with a warning: a metric never stops a model from loading."""
    from . import metrics as metrics_mod

    if isinstance(metrics, dict):
        return {k: _known_metrics(v, source) for k, v in metrics.items()}
    if not isinstance(metrics, list):
        return metrics
    kept = []
    for m in metrics:
        if isinstance(m, list):
            kept.append(_known_metrics(m, source))
            continue
        if isinstance(m, dict):
            try:
                metrics_mod.get(m)
            except (ValueError, TypeError, KeyError) as e:
                warnings.warn(f"{source}: the saved metric {m.get('class_name')!r} is left out ({e})", stacklevel=4)
                continue
        kept.append(m)
    return kept


def _flat_metrics(metrics):
    if isinstance(metrics, list) and metrics and isinstance(metrics[0], list) and len(metrics) == 1:
        return metrics[0]
    return metrics
