"""Passes over the IR, run in one listed pipeline. Each is a plain function over a graph;
`run_pipeline(snapshots=True)` keeps a printable snapshot after each (`kgraph inspect --after NAME`)."""

from __future__ import annotations

import warnings

from dataclasses import dataclass, field

import ir

from .autodiff import autodiff
from .dce import dce
from .fold import fold_batch_norm, lower_batch_norm
from .fusion import (
    Decision,
    fuse_bias_grad,
    fuse_column_sums,
    fuse_dense,
    fuse_elementwise,
    fuse_pool_relu_grad,
    fuse_updates,
    read_scalar_broadcasts,
)
from .loss import LOSSES, add_loss, drop_outputs
from .memory import MemoryPlan, materialize_gradients, materialize_outputs, plan_memory, updates_last
from .split import block_convolutions, split_gemms, split_samples
from .optimizer import OPTIMIZERS, add_constraints, add_optimizer
from .recurrent import plan_recurrent

PASS_NAMES = ["frontend", "fold", "loss", "autodiff", "optimizer", "fuse", "dce", "plan"]


@dataclass
class Compiled:
    """A graph ready for codegen, with what the passes decided along the way."""

    kind: str  # "train" | "test" | "predict"
    graph: ir.Graph
    plan: MemoryPlan
    param_order: list
    decisions: list = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)  # pass name -> printed graph


def run_pipeline(
    kind: str,
    forward: ir.Graph,
    param_order: list,
    losses=None,
    regularizers=(),
    constraints=None,
    optimizer=None,
    debug=False,
    trainable=None,
    parts=1,
    fuse=True,
    schedule=None,
    snapshots=False,
    masks=None,
    outputs=None,
) -> Compiled:
    """kind "predict": forward only; "test": forward + loss; "train": + backward and updates.
    losses: one {"name", "from_logits", "weight"} per output; optimizer: (kind, hyper-parameters);
    constraints: {param id: constraint attrs} (frontend/constraints.py), applied after the updates;
    trainable: the parameters the optimizer updates (default all; the others are state such as
    batch-norm statistics, which the forward graph updates itself); parts: CPU cores to split the
    GEMMs that touch a weight over (passes/split.py; 1 for CUDA); fuse=False skips the fusion
    passes (the tests check that fusion changes no number); schedule: graph -> the node order the
    target's step runs (memory planning's liveness; default the graph's order, and for a training
    step `updates_last`: the generated steps run it in two halves, gradients then updates);
    snapshots: keep the graph printed after each pass (printing a large graph eight times costs
    more than most passes, so only when asked); masks: {output index: its [B,T] 0/1 mask node}, by
    which the loss weights that output's steps; outputs: the indices of the model outputs a "train"
    or "test" step returns (those its metrics read; default all): the others' values are computed
    only as far as the loss needs them (a classifier's softmax, whose loss reads the logits, not at
    all)."""
    g = forward.clone()
    g.name = f"{forward.name}_{kind}"
    out = Compiled(kind, g, None, list(param_order))

    def done(name):
        if debug:
            ir.verify(g)
        if snapshots:
            out.snapshots[name] = str(g)

    done("frontend")
    if kind != "train":  # inference: batch norms use their moving statistics
        out.decisions += fold_batch_norm(g)
    lower_batch_norm(g, keep_batch_statistics=kind == "train")
    done("fold")
    if kind != "predict":
        add_loss(g, losses, regularizers, masks)
        if outputs is not None:
            drop_outputs(g, outputs)
        done("loss")
    if kind == "train":
        wrt = list(param_order if trainable is None else trainable)
        if not wrt:  # every layer frozen: Keras trains such a model, updating nothing, with a warning
            warnings.warn(f"model {forward.name!r} has no trainable weights: training updates nothing", stacklevel=2)
        # an output compiled without a loss, or a weight read only through comparisons (a Dense
        # before a Discretization): Keras trains the rest and leaves the weights no gradient reaches
        # as they are, with this warning: they keep their optimizer slots but get no update, weight
        # decay included (none read at all: autodiff says the loss reads no trainable weight)
        grads = autodiff(g, g.outputs["loss"], wrt, skip_unreached=True) if wrt else {}
        if wrt and not grads:
            raise ValueError(
                f"No gradients provided for any weight: the loss reads {wrt} only through operations "
                "without a gradient (comparisons, Discretization, CategoryEncoding)"
            )
        unread = [w for w in wrt if w not in grads]
        if unread:
            warnings.warn(
                f"Gradients do not exist for weights {unread} when minimizing the loss: no loss reads "
                "the outputs they lead to, or reads them only through operations without a gradient, "
                "so training leaves them as they are (as in Keras)",
                stacklevel=2,
            )
        done("autodiff")
        lower_batch_norm(g)  # training's, kept for autodiff
        add_optimizer(g, grads, optimizer[0], optimizer[1], params=wrt)
        # only the weights the step updates: Keras constrains the variables it applies gradients to
        constrained = {p: c for p, c in (constraints or {}).items() if p in grads}
        done("optimizer")
    if fuse:
        out.decisions += fuse_dense(g, training=kind == "train")
        dce(g)
        out.decisions += fuse_pool_relu_grad(g)
        out.decisions += fuse_bias_grad(g)
        out.decisions += fuse_elementwise(g)
        out.decisions += read_scalar_broadcasts(g)
        out.decisions += fuse_column_sums(g)
        out.decisions += fuse_updates(g)
    if kind == "train":
        add_constraints(g, constrained)  # after the (fused) updates, which are the graph's last nodes
    done("fuse")
    dce(g)
    materialize_gradients(g)
    materialize_outputs(g)
    done("dce")
    out.decisions += split_gemms(g, parts)
    out.decisions += split_samples(g, parts)
    out.decisions += block_convolutions(g)
    out.decisions += plan_recurrent(g)
    if schedule is None and kind == "train":
        schedule = updates_last  # every target runs a training step as gradients, then updates
    out.plan = plan_memory(g, param_order, schedule(g) if schedule else None)
    done("plan")
    ir.verify(g)
    return out


__all__ = [
    "run_pipeline",
    "Compiled",
    "PASS_NAMES",
    "autodiff",
    "dce",
    "add_loss",
    "add_optimizer",
    "LOSSES",
    "OPTIMIZERS",
    "fold_batch_norm",
    "lower_batch_norm",
    "fuse_dense",
    "fuse_pool_relu_grad",
    "fuse_bias_grad",
    "fuse_elementwise",
    "fuse_column_sums",
    "fuse_updates",
    "read_scalar_broadcasts",
    "plan_memory",
    "materialize_gradients",
    "MemoryPlan",
    "Decision",
    "split_gemms",
    "split_samples",
    "block_convolutions",
    "updates_last",
]
