"""Append the optimizer's in-place update of every parameter, with its slots as 'state' sources.
The slots of one kind are created for all parameters in order, so each kind is contiguous."""
from __future__ import annotations

from ir import scalar

# optimizer -> (update op, slot names given the hyper-parameters, whether it reads the step count)
OPTIMIZERS = {
    "sgd": ("sgd_update", lambda h: ["momentum"] if h.get("momentum") else [], False),
    "adam": ("adam_update", lambda h: ["m", "v"], True),
    "rmsprop": ("rmsprop_update",
                lambda h: ["velocity"] + (["average_gradient"] if h.get("centered") else [])
                + (["momentum"] if h.get("momentum") else []), False),
}


def add_optimizer(graph, grads: dict[str, str], kind: str, hyper: dict):
    """grads: {param id: gradient id} in parameter order. Adds scalar sources 'lr' (and 'step',
    the 1-based iteration, for Adam) and one update node per parameter."""
    op, slot_names, uses_step = OPTIMIZERS[kind]
    names = slot_names(hyper)
    lr = graph.source("scalar", "lr", scalar("float32"))
    shared = [lr] + ([graph.source("scalar", "step", scalar("float64"))] if uses_step else [])
    slots = {p: [] for p in grads}
    for name in names:
        for p in grads:
            slots[p].append(graph.source("state", f"{p}_{name}", graph.type(p), slot=name, param=p))
    for p, gr in grads.items():
        graph.add_node(op, [p, gr, *slots[p], *shared], dict(hyper), name=f"update_{p}")
    return graph
