"""Keras's model and weight files, both ways: `.keras` archives (config.json + model.weights.h5),
legacy whole-model `.h5`, weight files (`.weights.h5` of Keras 3, `.h5` of Keras 2) and `.npz`.

Weights are matched by layer name (and the names of the nested models around it), so a file
written by Keras or by kgraph loads into the same model built from the same config. Every write
goes to a temporary file first, is fsynced and renamed: a crash never leaves half a file."""
from __future__ import annotations

import datetime
import io
import json
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .optimizers.schedules import LearningRateSchedule
from .runtime.files import FileFormatError, atomic_write, read_npz_weights, write_npz_weights

KERAS_VERSION = "3.15.1"  # the format version written; Keras 3 reads archives of any 3.x


def _h5py():
    try:
        import h5py
    except ImportError:  # h5py is an optional extra
        raise FileFormatError("reading and writing .h5 files needs h5py: pip install 'kgraph[h5]'") from None
    return h5py


# ---------------------------------------------------------------------- how Keras names things

def snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


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
            for i, (_, value) in enumerate(weights.get((*path, layer.name), [])):
                var_group.create_dataset(str(i), data=value)


def _read_keras3_layers(group, path=()) -> dict:
    out = {}
    for key in group.get("layers", {}):
        sub = group["layers"][key]
        name = sub["vars"].attrs.get("name", key) if "vars" in sub else key
        name = name.decode() if isinstance(name, bytes) else str(name)
        if "layers" in sub:
            out.update(_read_keras3_layers(sub, path + (name,)))
        elif "vars" in sub and len(sub["vars"]):
            out[(*path, name)] = [np.asarray(sub["vars"][str(i)]) for i in range(len(sub["vars"]))]
    return out


def _write_keras3_weights(h5file, model, include_optimizer):
    _write_keras3_layers(h5file, model.frontend.desc, (), weights_by_layer(model))
    top = h5file.create_group("vars")
    top.attrs["name"] = model.name
    if include_optimizer and model.optimizer is not None:
        opt = h5file.create_group("optimizer").create_group("vars")
        opt.attrs["name"] = model.optimizer.name
        for i, value in enumerate(optimizer_variables(model)):
            opt.create_dataset(str(i), data=value)


# ---------------------------------------------------------------------- Keras 2 / legacy h5

def _read_legacy_layers(group) -> dict:
    """{top-level layer name: [arrays in weight_names order]} of a legacy weights group."""
    out = {}
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("layer_names", [])]
    for name in names:
        g = group[name]
        wnames = [w.decode() if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
        if wnames:
            out[name] = [np.asarray(g[w]) for w in wnames]  # a weight name is its dataset's path in g
    return out


def _write_legacy_layers(group, model):
    weights = weights_by_layer(model)
    names = [l.name for l in model.frontend.desc.layers]
    group.attrs["layer_names"] = np.array([n.encode() for n in names])
    group.attrs["backend"] = "tensorflow"
    group.attrs["keras_version"] = KERAS_VERSION
    for name in names:
        g = group.create_group(name)
        owned = [(spec, v) for key, items in weights.items() if key[0] == name for spec, v in items]
        wnames = ["/".join((*spec.path, spec.layer, spec.name)) for spec, _ in owned]
        g.attrs["weight_names"] = np.array([w.encode() for w in wnames])
        for w, (_, value) in zip(wnames, owned):
            g.create_dataset(w, data=value)


# ---------------------------------------------------------------------- matching weights to a model

def _assign_by_layer(model, found: dict, legacy: bool, source: str):
    """Set the model's weights from {layer key: arrays}, naming the first mismatch."""
    weights = []
    by_layer = weights_by_layer(model)
    if legacy:  # keyed by the top-level layer only: the nested model's weights in its own order
        grouped = {}
        for key, items in by_layer.items():
            grouped.setdefault(key[0], []).extend(items)
        by_layer = {(k,): v for k, v in grouped.items()}
        found = {(k,): v for k, v in found.items()}
    for key, items in by_layer.items():
        arrays = found.get(key)
        where = "/".join(key)
        if arrays is None:
            raise FileFormatError(f"{source}: no weights for layer {where!r}; the file has "
                                  f"{sorted('/'.join(k) for k in found)}")
        if len(arrays) != len(items):
            raise FileFormatError(f"{source}: layer {where!r} has {len(arrays)} weights in the file, "
                                  f"the model expects {len(items)}")
        for (spec, current), value in zip(items, arrays):
            if tuple(value.shape) != tuple(current.shape):
                raise FileFormatError(f"{source}: weight {where}/{spec.name} has shape {tuple(value.shape)} "
                                      f"in the file, the model expects {tuple(current.shape)}")
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
}
KERAS_SLOT_NAMES = {"m": "momentum", "v": "velocity", "u": "norm", "v_hat": "velocity_hat"}


def _slot_sequence(model):
    """[(slot name, param node)] in Keras's optimizer.variables order (after iteration, lr)."""
    state = model.executable.steps["train"]["state"]
    present = {s["slot"] for s in state}
    params = [w.node for w in model.frontend.weights if w.trainable]
    if model.optimizer.kind not in KERAS_SLOT_ORDER:  # Nadam keeps one more variable (u_product)
        raise FileFormatError(f"saving or loading {type(model.optimizer).__name__}'s state in Keras's layout "
                              f"is not supported yet; save with include_optimizer=False")
    calls = KERAS_SLOT_ORDER[model.optimizer.kind]
    return [(name, p) for call in calls if set(call) <= present for p in params for name in call]


def optimizer_variables(model) -> list:
    """Keras's optimizer.variables: iteration, learning_rate, then the slots."""
    state = {(s["slot"], s["param"]): s for s in model.executable.steps["train"]["state"]}
    out = [np.array(model.optimizer.iterations, np.int64), np.array(model.optimizer.learning_rate, np.float32)]
    for key in _slot_sequence(model):
        s = state[key]
        n = int(np.prod(s["shape"]))
        out.append(model.executable.state[s["offset"]:s["offset"] + n].reshape(s["shape"]).copy())
    return out


def _restore_optimizer(model, h5file, source):
    """The optimizer's variables of a Keras 3 weights file, when the model is compiled."""
    if model.compile_args is not None and "optimizer" in h5file and "vars" in h5file["optimizer"]:
        opt = h5file["optimizer"]["vars"]
        if len(opt):
            set_optimizer_variables(model, [np.asarray(opt[str(i)]) for i in range(len(opt))], source)


def set_optimizer_variables(model, values, source):
    state = {(s["slot"], s["param"]): s for s in model.executable.steps["train"]["state"]}
    sequence = _slot_sequence(model)
    if len(values) != 2 + len(sequence):
        raise FileFormatError(f"{source}: the optimizer state has {len(values)} variables, "
                              f"{model.optimizer.name} here needs {2 + len(sequence)}")
    for key, value in zip(sequence, values[2:]):
        s = state[key]
        if tuple(value.shape) != tuple(s["shape"]):
            raise FileFormatError(f"{source}: optimizer slot {key[0]} of {key[1]} has shape {value.shape}, "
                                  f"expected {tuple(s['shape'])}")
    for key, value in zip(sequence, values[2:]):
        s = state[key]
        n = int(np.prod(s["shape"]))
        model.executable.state[s["offset"]:s["offset"] + n] = np.ravel(value)
    model.optimizer.iterations = int(values[0])
    if not isinstance(model.optimizer._learning_rate, LearningRateSchedule):  # a schedule recomputes it
        model.optimizer.learning_rate = float(values[1])


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
            if "layers" in f:
                _assign_by_layer(model, _read_keras3_layers(f), False, name)
                _restore_optimizer(model, f, name)
            else:
                group = f["model_weights"] if "model_weights" in f else f
                _assign_by_layer(model, _read_legacy_layers(group), True, name)
        return
    model.set_weights(read_npz_weights(name))


@contextmanager
def _open_h5(path):
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise FileFormatError(f"{path}: not a readable HDF5 file ({e})") from None
    try:
        yield f
    except (KeyError, OSError, ValueError) as e:
        if isinstance(e, FileFormatError):
            raise
        raise FileFormatError(f"{path}: unexpected layout ({e})") from None
    finally:
        f.close()


def save_model(model, filepath, include_optimizer=True):
    """`.keras` archive (config.json, metadata.json, model.weights.h5) or legacy `.h5`."""
    name = str(filepath)
    config = dict(model.frontend.config)
    compile_config = _compile_config(model)
    with atomic_write(filepath) as tmp:
        if name.endswith((".h5", ".hdf5")):
            with _h5py().File(tmp, "w") as f:
                f.attrs["model_config"] = json.dumps(config)
                f.attrs["keras_version"] = KERAS_VERSION
                f.attrs["backend"] = "tensorflow"
                if compile_config:
                    f.attrs["training_config"] = json.dumps(_legacy_training_config(compile_config))
                _write_legacy_layers(f.create_group("model_weights"), model)
                if include_optimizer and compile_config:
                    g = f.create_group("optimizer_weights")
                    names = _legacy_optimizer_names(model)
                    g.attrs["weight_names"] = np.array([n.encode() for n in names])
                    for n, v in zip(names, optimizer_variables(model)):
                        g.create_dataset(n, data=v)
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


def _compile_config(model):
    if model.compile_args is None:
        return None
    opt = model.optimizer
    return {"optimizer": {"module": "keras.optimizers", "class_name": type(opt).__name__,
                          "config": opt.get_config(), "registered_name": None},
            "loss": model.compile_args["loss_config"], "loss_weights": model.compile_args.get("loss_weights"),
            "metrics": model.compile_args["metrics"], "weighted_metrics": None, "run_eagerly": False,
            "steps_per_execution": 1, "jit_compile": False}


def _legacy_training_config(compile_config):
    out = {k: v for k, v in compile_config.items() if k != "optimizer"}
    out["optimizer_config"] = {"class_name": compile_config["optimizer"]["class_name"],
                               "config": compile_config["optimizer"]["config"]}
    return out


def _legacy_optimizer_names(model):
    prefix = model.optimizer.name
    names = [f"{prefix}/iteration", f"{prefix}/learning_rate"]
    for slot, param in _slot_sequence(model):
        names.append(f"{prefix}/{param}_{KERAS_SLOT_NAMES.get(slot, slot)}")
    return names


def read_model_file(filepath):
    """(config, compile config or None, weights reader) of a .keras archive or a legacy .h5.
    The reader sets a built model's weights and, if compiled, its optimizer state."""
    name = str(filepath)
    if not Path(name).exists():
        raise FileFormatError(f"{name}: no such model file")
    if name.endswith(".keras"):
        try:
            with zipfile.ZipFile(name) as z:
                config = json.loads(z.read("config.json"))
                weights_bytes = z.read("model.weights.h5")
        except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError) as e:
            raise FileFormatError(f"{name}: not a readable .keras archive ({e})") from None
        compile_config = config.pop("compile_config", None)

        def restore(model):
            try:
                f = _h5py().File(io.BytesIO(weights_bytes), "r")
            except OSError as e:
                raise FileFormatError(f"{name}: model.weights.h5 is not readable ({e})") from None
            with f:
                _assign_by_layer(model, _read_keras3_layers(f), False, name)
                _restore_optimizer(model, f, name)
        return config, compile_config, restore
    with _open_h5(name) as f:
        if "model_config" not in f.attrs:
            raise FileFormatError(f"{name}: has no model_config: a weights file, not a whole model "
                                  f"(load the config and use load_weights)")
        config = json.loads(_text(f.attrs["model_config"]))
        training = json.loads(_text(f.attrs["training_config"])) if "training_config" in f.attrs else None
    compile_config = None
    if training:
        compile_config = {"optimizer": training.get("optimizer_config"), "loss": training.get("loss"),
                          "metrics": _flat_metrics(training.get("metrics")), "loss_weights": training.get("loss_weights")}

    def restore(model):
        with _open_h5(name) as f:
            _assign_by_layer(model, _read_legacy_layers(f["model_weights"]), True, name)
            if model.compile_args is not None and "optimizer_weights" in f:
                g = f["optimizer_weights"]
                names = [_text(n) for n in g.attrs.get("weight_names", [])]
                if names and names[0].endswith("/iteration"):  # Keras 3's layout (Keras 2's is not read)
                    set_optimizer_variables(model, [np.asarray(g[n]) for n in names], name)
    return config, compile_config, restore


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _flat_metrics(metrics):
    if isinstance(metrics, list) and metrics and isinstance(metrics[0], list) and len(metrics) == 1:
        return metrics[0]
    return metrics
