"""The kgraph command: inspect | compile | train | evaluate | predict | bench | cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .runtime import cache, files

EXIT_USAGE = 2


MODEL_FILES = (".keras", ".h5", ".hdf5")  # files that hold weights; .json/.yaml configs do not
WEIGHT_FILES = (".npz", ".weights.h5", ".h5", ".hdf5")


def _model(args):
    from .models import load_model

    model = load_model(args.model, seed=args.seed)
    if getattr(args, "weights", None):
        if not model.built:
            model.build(_data_shapes(args))
        model.load_weights(args.weights)
    shapes = getattr(args, "input_shape", None)
    if shapes:
        shape = shapes if len(shapes) > 1 else shapes[0]
        if model.built and model.frontend.unknown_dims:
            model.fix_input_shapes(shape)  # the config's unknown dimensions, fixed ahead of time
        else:
            model.build(shape)
    return model


def _require_built(model, args):
    """inspect and compile have no data to build a model from: its shape comes from --input-shape."""
    if not model.built:
        raise ValueError(
            f"{args.model}: the config declares no input shape; give it with --input-shape, "
            "e.g. --input-shape 64 or --input-shape 28,28,1 (once per input)"
        )
    if model.frontend.unknown_dims:
        declared = ", ".join(str(tuple(i.shape)) for i in model.frontend.inputs)
        raise ValueError(
            f"{args.model}: the inputs {declared} leave dimensions to the data; fix them with --input-shape, "
            "e.g. --input-shape 80 or --input-shape 64,64,3 (once per input, in input order)"
        )


def _data_shapes(args):
    """The input shapes of --data, to build a model whose config declares none before its weights load."""
    from .runtime import data

    xs, _, _ = data.load(args.data, labels=False)
    shapes = [(None, *x.shape[1:]) for x in (xs.values() if isinstance(xs, dict) else xs)]  # a Sequential: one
    return shapes if len(shapes) > 1 else shapes[0]


def _require_weights(args):
    """evaluate and predict on random initial weights say nothing useful: ask for them."""
    if not args.weights and not args.random_weights and not str(args.model).lower().endswith(MODEL_FILES):
        raise ValueError(
            f"{args.command} needs trained weights: --weights FILE (from train --save-weights), "
            "a .keras/.h5 model file, or --random-weights to use fresh initial weights"
        )


def _check_output(path, suffixes, what):
    """Fail before any work when an output path cannot be written (its folder, its type)."""
    if not str(path).lower().endswith(suffixes):
        raise ValueError(f"{what} {path}: the file name must end in {' or '.join(suffixes)}")
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise ValueError(f"{what} {path}: the folder {folder} does not exist")
    if Path(path).is_dir():
        raise ValueError(f"{what} {path} is a folder")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{what} {path}: the folder {folder} is not writable")


def _check_counts(args):
    for name in ("batch_size", "replicas"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("epochs", "initial_epoch"):
        if getattr(args, name, 0) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    rate = getattr(args, "learning_rate", None)
    if rate is not None and not rate > 0:
        raise ValueError(f"--learning-rate must be a positive number, got {rate}")
    split = getattr(args, "validation_split", 0.0)
    if not 0 <= split < 1:
        raise ValueError(f"--validation-split must be in [0, 1), got {split}")


def _compile(model, args, device=None):
    """Compile with the flags for --device (or `device`); a .keras/.h5 file's saved compile
    arguments stand when no other flag is given."""
    from . import optimizers

    device = device or getattr(args, "device", "auto")
    flags = (args.optimizer, args.loss, args.metrics, args.learning_rate)
    if model.compile_args is not None and all(f is None for f in flags):
        if device != "auto":
            saved = model.compile_args
            model.compile(
                optimizer=saved["optimizer"],
                loss=saved["loss_config"],
                metrics=saved["metrics"],
                loss_weights=saved["loss_weights"],
                device=device,
            )
        return
    opt = optimizers.get(args.optimizer or "adam")
    if args.learning_rate is not None:
        opt.learning_rate = args.learning_rate
    metrics = _per_output(args.metrics, "--metrics") if args.metrics is not None else None
    if isinstance(metrics, list) and len(model.output_names) > 1:  # every output gets them (by output)
        metrics = {name: metrics for name in model.output_names}
    loss = _per_output(args.loss or "sparse_categorical_crossentropy", "--loss")
    if isinstance(loss, list):
        if len(loss) > 1:
            raise ValueError(f"--loss {args.loss}: give one loss, or one per output as name=loss,name=loss")
        loss = loss[0]
    else:
        twice = [name for name, names in loss.items() if len(names) > 1]
        if twice:
            raise ValueError(f"--loss {args.loss}: outputs {twice} are given more than one loss")
        loss = {name: names[0] for name, names in loss.items()}
    if metrics is None:  # by default, accuracy where the loss is a classifier's
        classifier = lambda name: "crossentropy" in str(name)  # noqa: E731
        if isinstance(loss, dict):
            metrics = {name: ["accuracy"] for name, one in loss.items() if classifier(one)}
        else:
            metrics = ["accuracy"] if classifier(loss) else None
            if metrics and len(model.output_names) > 1:
                metrics = {name: metrics for name in model.output_names}
    model.compile(optimizer=opt, loss=loss, metrics=metrics or None, device=device)


def _per_output(text: str, flag: str):
    """A flag's comma-separated names, for every output (a list), or per output as
    output=name,output=name (a dict of lists; an output named twice gets both, as for metrics)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    named = [item for item in items if "=" in item]
    if not named:
        return items
    if len(named) != len(items):
        raise ValueError(f"{flag} {text}: name every entry's output (output=name), or none")
    by_output = {}
    for item in items:
        output, name = (part.strip() for part in item.split("=", 1))
        by_output.setdefault(output, []).append(name)
    return by_output


def cmd_inspect(args):
    from .runtime import policy

    policy.runs_steps = False  # inspect runs no step
    try:
        _inspect(args)
    finally:  # main() called in a program that goes on to train
        policy.runs_steps = True


def _inspect(args):
    from .passes import PASS_NAMES

    _check_counts(args)
    if args.after and args.after not in PASS_NAMES:
        raise ValueError(f"no pass {args.after!r}; passes: {', '.join(PASS_NAMES)}")
    model = _model(args)
    _require_built(model, args)
    if args.after or not (args.fusion or args.plan or args.dot):  # it prints the graph after each pass
        model.snapshot_kinds = (args.kind,)
    model.summary()
    try:
        compiled_on_load = args.kind in model.compiled  # a file's compile arguments, before snapshot_kinds
        if args.kind == "train" or args.fusion or args.plan or args.after or args.device == "cuda" or compiled_on_load:
            model.step_kinds = (args.kind,)  # the step it prints: a 5,000-layer model's other step costs seconds
            _compile(model, args, device="cpu")  # the CUDA launcher is only generated here, never run
        compiled = model.compiled.get(args.kind) if args.kind != "predict" else None
        if compiled is None:
            model._build("predict")
            compiled = model.compiled["predict"]
    except NotImplementedError as e:  # ops without kernels yet: the passes ran, codegen did not
        compiled = model.compiled.get(args.kind)
        if compiled is None:
            raise
        print(f"\n# {e}")
        args.device = "cpu"
    if args.after:
        if args.after not in compiled.snapshots:
            raise ValueError(f"no pass {args.after!r} in the {args.kind} pipeline; passes: {', '.join(PASS_NAMES)}")
        print(f"\n# IR after {args.after}")
        print(compiled.snapshots[args.after])
    elif not (args.fusion or args.plan or args.dot):
        for name, text in compiled.snapshots.items():
            print(f"\n# IR after {name}")
            print(text)
    if args.fusion:
        print(f"\n# fusion decisions ({args.kind} step)")
        for d in compiled.decisions:
            print(d)
    if args.plan:
        print()
        print(compiled.plan.report(args.batch_size))
    if args.dot:
        from ir import to_dot

        files.write_text(args.dot, to_dot(compiled.graph))  # atomically: a kill keeps the old file
        print(f"wrote {args.dot} (render with: dot -Tpng {args.dot} -o graph.png)")
    if args.device == "cuda":
        from .codegen import generate_cuda

        print(f"\n# CUDA: {generate_cuda(compiled)[1]} kernel launches per {args.kind} step")


def _strategy(args):
    from . import distribute

    device = getattr(args, "device", "auto")
    if args.strategy == "mpi":
        try:  # --device auto stays on the CPU here, as before GPUs trained replicas
            return distribute.MPIStrategy(device="cuda" if device == "cuda" else "cpu")
        except (ImportError, RuntimeError) as e:
            raise ValueError(f"--strategy mpi: {e}") from None
    if args.strategy == "mirrored" and device == "cuda":  # every local GPU, or --replicas of them
        if args.replicas is None:
            return distribute.MirroredStrategy()
        return distribute.MirroredStrategy([f"gpu:{i}" for i in range(args.replicas)])
    if args.strategy == "mirrored":
        return distribute.MirroredStrategy([f"cpu:{i}" for i in range(args.replicas or 2)])
    return distribute.Strategy()


def cmd_train(args):
    from .runtime import child, data

    if getattr(args, "device", "auto") != "cuda":
        child.start_spare_for_new_kernels()  # importing while the model loads (runtime/child.py)

    _check_counts(args)
    if args.save_weights:
        _check_output(args.save_weights, WEIGHT_FILES, "--save-weights")
    if args.save_model:
        _check_output(args.save_model, MODEL_FILES, "--save-model")
    with _strategy(args).scope():
        model = _model(args)
        _compile(model, args)
    xs, ys, val = data.load(args.data)
    data.check_names(args.data, xs, ys, val, model.info)
    _bundled_data_fits(model, args.data, xs)
    history = model.fit(
        xs,
        ys,
        batch_size=args.batch_size,
        epochs=args.initial_epoch + args.epochs,  # as Keras's fit counts them, from initial_epoch
        initial_epoch=args.initial_epoch,
        verbose=args.verbose,
        validation_data=val,
        validation_split=args.validation_split if val is None else 0.0,
    )
    if not model.is_chief:
        return
    if args.save_weights:
        model.save_weights(args.save_weights)
        print(f"saved weights to {args.save_weights}")
    if args.save_model:
        model.save(args.save_model)
        print(f"saved the model, its weights and optimizer state to {args.save_model} (kgraph train it to resume)")
    final = {k: v[-1] for k, v in history.history.items()}
    if not final:
        print("final: no epochs ran (--epochs 0)")
        return
    shown = " - ".join(f"{k}: {v:.4f}" for k, v in final.items())
    print(f"final: {shown}")
    if "val_accuracy" in final:
        print(f"validation accuracy: {final['val_accuracy']:.4f}")


def _bundled_data_fits(model, name, xs):
    """A bundled dataset (the default, digits) that the model's inputs cannot take: say which
    --data to give, not only that shapes differ (an example model such as
    examples/lstm_text_classifier.json trained without --data meets this first)."""
    from .runtime import data
    from .runtime.checks import DataError

    if name not in data.BUILTIN or not model.built:
        return
    try:
        model._inputs(xs, checked=True)
    except DataError as e:
        others = " or ".join(f"--data {n}" for n in data.BUILTIN if n != name)
        raise DataError(
            f"--data {name} ({data.BUILTIN[name]}) does not fit this model: {e}; "
            f"give {others}, or an .npz of your own (x, y, optionally x_val, y_val)"
        ) from None


def _rows(args, model, labels=True):
    """(x, y, which) of --data: its validation rows when it has them (the bundled digits' held-out
    part, an .npz's x_val/y_val), else all its rows; evaluate and predict read the same ones
    (predict needs no y: labels False)."""
    from .runtime import data

    xs, ys, val = data.load(args.data, labels)
    data.check_names(args.data, xs, ys, val, model.info)
    if val is not None:
        return val[0], val[1], f"the {data.rows(val[0])} validation rows of {args.data}"
    return xs, ys, f"the {data.rows(xs)} rows of {args.data}"


def cmd_evaluate(args):
    _check_counts(args)
    _require_weights(args)
    model = _model(args)
    _compile(model, args)
    x, y, which = _rows(args, model)
    print(f"evaluating on {which}")
    logs = model.evaluate(x, y, batch_size=args.batch_size, verbose=args.verbose, return_dict=True)
    print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))


def cmd_predict(args):
    _check_counts(args)
    _require_weights(args)
    if args.output:
        _check_output(args.output, (".npy", ".npz"), "-o")
    model = _model(args)
    xs, _, which = _rows(args, model, labels=False)
    preds = model.predict(xs, batch_size=args.batch_size, verbose=args.verbose)
    if args.output:
        _write_predictions(args.output, preds, model.output_names)
        print(f"wrote predictions of {which} to {args.output}")
    else:
        np.set_printoptions(precision=4, suppress=True)
        print(f"predictions of {which}:")
        print(preds)


def _write_predictions(path, preds, output_names):
    """An .npz of one array per output (named by its key in a dict of outputs, else its layer),
    or an .npy: one output's array, or several outputs of one shape stacked."""
    named = preds if isinstance(preds, dict) else dict(zip(output_names, preds if isinstance(preds, list) else [preds]))
    arrays = list(named.values())
    if path.endswith(".npy") and len({a.shape for a in arrays}) > 1:
        shapes = ", ".join(f"{k} {a.shape}" for k, a in named.items())
        raise ValueError(f"-o {path}: the outputs have different shapes ({shapes}): give an .npz, one array per output")
    with files.atomic_write(path) as tmp, open(tmp, "wb") as f:
        if path.endswith(".npz"):
            np.savez(f, **named)
        else:
            np.save(f, arrays[0] if len(arrays) == 1 else np.stack(arrays))


def cmd_compile(args):
    _check_counts(args)
    model = _model(args)
    _require_built(model, args)
    _compile(model, args)
    if args.output is None:
        _compile_ahead(model)
        return
    before = _exported_steps(args.output)
    with files.atomic_folder(args.output) as tmp:  # each file replaced whole, never truncated
        model.export(tmp)
    out = args.output
    for name in sorted(before - _exported_steps(out)):  # an earlier export's steps, now no trainer's
        (Path(out) / name).unlink(missing_ok=True)
    print(f"wrote a trainer to {out}: python {out}/train.py --data DATA")


def _exported_steps(folder) -> set:
    """The step files a trainer exported to `folder` lists in its manifest.json (none if none)."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        return {Path(m["module"]).name for m in manifest["steps"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()


def _compile_ahead(model):
    """Compile the model's train, test and predict steps into kgraph's cache now, so that later
    runs of the same config with the same compile settings start with them compiled (a large
    model's steps take Numba minutes). Each step runs once on a batch of zeros, which starts its
    compile; this model's weights are thrown away."""
    from .runtime import background

    xs = [np.zeros((2, *shape[1:]), model.info["dtype"]) for shape in model.info["input_shapes"]]
    labels = model.executable.steps["test"].labels
    ys = [np.zeros((2, *label.shape[1:]), label.dtype) for label in labels]
    print(f"compiling the steps of {model.name!r} into {cache.cache_dir()} ...", flush=True)
    model.predict(xs, batch_size=2, verbose=0)
    if labels:
        model.test_on_batch(xs, ys)
        model.train_on_batch(xs, ys)
    for kind in model.executable.steps:
        lines, seconds = background.compile_estimate(model.executable.function(kind))
        print(f"  {kind} step: {lines:,} lines of generated code, about {seconds:.0f} s of one core", flush=True)
    model.executable.compiler.wait()
    print("done: `kgraph train` and fit() with this config and these settings now start compiled")


def cmd_cache(args):
    if args.prune is not None and args.prune < 0:
        raise ValueError(f"--prune takes a number of days, 0 or more; got {args.prune:g}")
    if args.clear or args.prune is not None:
        removed, size = cache.clear() if args.clear else cache.prune(args.prune)
        print(f"removed {removed} steps and kernels ({size / 1e6:.1f} MB)")
    print(cache.summary())


def cmd_bench(args):
    from .bench import compare
    from .frontend import read_config_file

    spec = {
        "config": read_config_file(args.model),
        "batch": args.batch_size,
        "steps": args.steps,
        "optimizer": (args.optimizer or "adam", args.learning_rate or 1e-3),
        "loss": args.loss or "sparse_categorical_crossentropy",
        "n_out": args.outputs,
    }
    frameworks = ["kgraph"] + [f for f in args.vs.split(",") if f]
    results = compare(spec, frameworks, repeats=args.repeats, epochs=args.epochs)
    print(f"{'framework':<12}{'samples/s':>12}{'kgraph is':>12}{'first step':>12}{'peak RSS':>10}{'loss':>9}")
    for f, r in results.items():
        ratio = results["kgraph"]["samples_per_s"] / r["samples_per_s"]
        print(
            f"{f:<12}{r['samples_per_s']:>12.0f}{ratio:>11.2f}x{r['first_step_s']:>11.2f}s"
            f"{r['peak_rss_mb']:>8.0f}MB{r['final_loss']:>9.4f}"
        )


class _DefaultsFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: {action.default})"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


def _input_shape(text: str) -> tuple:
    """--input-shape 28,28,1 -> (None, 28, 28, 1)."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 64 or 28,28,1") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be a positive integer")
    return (None, *dims)


def _input_shape_option(sp):
    sp.add_argument(
        "--input-shape",
        type=_input_shape,
        action="append",
        metavar="D1,D2,...",
        help="the input shape without the batch axis, for a config that declares none or leaves dimensions "
        "unknown (None): once per input, in the model's input order",
    )


def _parser():
    p = argparse.ArgumentParser(
        prog="kgraph",
        description="Compile and train saved Keras model configs "
        "(JSON or YAML from model.to_json()) with fused Numba kernels, no TensorFlow.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp, training=True):
        sp.add_argument("model", help="the model: a config (.json, .yaml, .yml) or a Keras file (.keras, .h5)")
        sp.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed of the initializers, dropout and shuffling (default: a fresh one each run)",
        )
        sp.add_argument("--batch-size", type=int, default=32, help="samples per step")
        if training:
            sp.add_argument(
                "--optimizer",
                help="sgd, adam, adamw, rmsprop, adagrad, adadelta, adamax, nadam, lion or ftrl "
                "(default adam, or what a .keras/.h5 file saved)",
            )
            sp.add_argument("--learning-rate", type=float, default=None, help="default: the optimizer's (Keras's)")
            sp.add_argument(
                "--loss",
                help="mse, mae, binary_crossentropy, categorical_crossentropy or "
                "sparse_categorical_crossentropy (default); per output: cls=sparse_categorical_crossentropy,reg=mse",
            )
            sp.add_argument(
                "--metrics",
                help="comma-separated: accuracy, mae, mse, ...; per output: cls=accuracy,reg=mae "
                "(default: accuracy on the outputs whose loss is a crossentropy)",
            )

    sp = sub.add_parser("inspect", help="print the summary, the IR after each pass, fusion decisions, the memory plan")
    common(sp)
    sp.add_argument("--kind", choices=["train", "test", "predict"], default="train", help="which step (default train)")
    sp.add_argument("--after", metavar="PASS", help="print the IR only after this pass")
    sp.add_argument("--fusion", action="store_true", help="print what fused and why candidates were refused")
    sp.add_argument("--plan", action="store_true", help="print the memory plan at --batch-size")
    sp.add_argument("--dot", metavar="FILE", help="write the final graph as Graphviz DOT")
    sp.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: also print the kernel launches per step of the CUDA launcher",
    )
    _input_shape_option(sp)
    sp.set_defaults(func=cmd_inspect)

    sp = sub.add_parser("train", help="train a model on an .npz file or the bundled dataset")
    common(sp)
    sp.add_argument(
        "--data",
        default="digits",
        help="an .npz (x, y[, x_val, y_val]), 'digits' (bundled) or 'reviews' (generated word ids)",
    )
    sp.add_argument("--epochs", type=int, default=5, help="passes over the training rows")
    sp.add_argument(
        "--initial-epoch",
        type=int,
        default=0,
        help="the epoch to number the first one from, resuming a run (Keras's initial_epoch; --epochs more run)",
    )
    sp.add_argument("--weights", help="start from these weights (.npz, .weights.h5 or .h5, as --save-weights writes)")
    sp.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        help="fraction of the rows (the last ones, as Keras) kept for validation when --data has no x_val",
    )
    sp.add_argument("--save-weights", metavar="FILE", help="write the trained weights (.npz, .weights.h5, .h5)")
    sp.add_argument(
        "--save-model",
        metavar="FILE",
        help="write the trained model with its optimizer state (.keras, .h5): `kgraph train FILE` resumes it",
    )
    sp.add_argument(
        "--verbose", type=int, default=1, choices=[0, 1, 2], help="0 silent, 1 progress bar, 2 one line per epoch"
    )
    sp.add_argument(
        "--strategy",
        choices=["none", "mirrored", "mpi"],
        default="none",
        help="data parallelism: in-process replicas (--replicas) or one per MPI process (mpirun); "
        "with --device cuda, on GPUs (one per MPI rank, by its local rank)",
    )
    sp.add_argument(
        "--replicas",
        type=int,
        help="replicas of the mirrored strategy (default: 2 on the CPU; with --device cuda, every local GPU)",
    )
    sp.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the steps run (default auto: CUDA when a GPU is available)",
    )
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="loss and metrics of a model (with --weights) on data")
    common(sp)
    sp.add_argument("--weights", help="weights saved by train --save-weights (.npz, .weights.h5 or .h5)")
    sp.add_argument("--random-weights", action="store_true", help="run on fresh initial weights, without --weights")
    sp.add_argument(
        "--data", default="digits", help="an .npz, 'digits' or 'reviews'; its validation rows when it has them"
    )
    sp.add_argument(
        "--verbose", type=int, default=1, choices=[0, 1, 2], help="0 silent, 1 progress bar, 2 one line at the end"
    )
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the steps run")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("predict", help="predictions of a model (with --weights) on data")
    common(sp, training=False)
    sp.add_argument("--weights", help="weights saved by train --save-weights (.npz, .weights.h5 or .h5)")
    sp.add_argument("--random-weights", action="store_true", help="run on fresh initial weights, without --weights")
    sp.add_argument(
        "--data", default="digits", help="an .npz, 'digits' or 'reviews'; its validation rows when it has them"
    )
    sp.add_argument(
        "-o",
        "--output",
        help="write the predictions here instead of printing them: .npy (one output, or several of one shape "
        "stacked) or .npz (one array per output, by name)",
    )
    sp.add_argument(
        "--verbose", type=int, default=0, choices=[0, 1, 2], help="0 silent, 1 progress bar, 2 one line at the end"
    )
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("bench", help="train the same model in kgraph and its peers, side by side (medians)")
    common(sp)
    sp.add_argument("--vs", default="tensorflow,torch", help="peers to compare with (comma-separated)")
    sp.add_argument("--steps", type=int, default=200, help="batches per timed epoch (random data)")
    sp.add_argument("--epochs", type=int, default=3, help="timed epochs per run, after a first step that compiles")
    sp.add_argument(
        "--repeats", type=int, default=3, help="runs of each framework, alternating; the median is reported"
    )
    sp.add_argument("--outputs", type=int, default=10, help="classes (or regression targets) of the output")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("cache", help="show, prune or clear the cache of generated steps and kernels")
    what = sp.add_mutually_exclusive_group()
    what.add_argument(
        "--prune",
        type=float,
        metavar="DAYS",
        help=f"remove what no compile used for DAYS days (done at {cache.UNUSED_DAYS} on its own)",
    )
    what.add_argument("--clear", action="store_true", help="remove every generated step and kernel")
    sp.set_defaults(func=cmd_cache)

    sp = sub.add_parser(
        "compile",
        help="write a runnable trainer (generated kernels + train.py) to a folder with -o; without -o, "
        "compile the model's steps into kgraph's cache ahead of time",
    )
    common(sp)
    sp.add_argument("-o", "--output", metavar="DIR", help="the folder to write the trainer to")
    _input_shape_option(sp)
    sp.set_defaults(func=cmd_compile)
    return p


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: one line, no source path or code line."""
    return "kgraph: warning: " + " ".join(str(message).split()) + "\n"


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    format_warning, warnings.formatwarning = warnings.formatwarning, _one_line  # e.g. a NaN loss's, with its step
    try:
        args.func(args)
    except (ValueError, OSError, KeyError, RuntimeError, NotImplementedError, ImportError) as e:
        # bad input gets one clear line, never a traceback (ConfigError and DataError are ValueErrors)
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"kgraph: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    finally:
        warnings.formatwarning = format_warning
    return 0


if __name__ == "__main__":
    sys.exit(main())
