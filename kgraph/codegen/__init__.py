"""Code generation: Python source of Numba kernels from a compiled graph and its memory plan."""
from .cpu import generate as generate_cpu
from .cuda import generate as generate_cuda

__all__ = ["generate_cpu", "generate_cuda"]


def step_manifest(compiled, path) -> dict:
    """How to call the generated step of `compiled` (module at `path`): everything the runtime
    needs, as plain JSON-able data, so a compiled trainer runs without the passes."""
    g, plan = compiled.graph, compiled.plan

    def place(nid):
        slot = plan.slots[nid]
        if slot.region == "view":
            slot = plan.slots[slot.view_of]
        if slot.region not in ("arena", "params", "grads", "state"):
            return None
        return {"region": slot.region, "offset": slot.offset, "batch": slot.batch,
                "shape": list(g.type(nid).shape), "dtype": g.type(nid).dtype}

    rng = []
    for n in g.sources("rng"):
        s = plan.slots[n.id]
        rng.append({"node": n.id, "offset": s.offset, "batch": s.batch, "size": s.size, "rate": n.attrs["rate"],
                    "shape": list(n.type.shape), "layer": n.attrs.get("layer", "")})
    return {
        "kind": compiled.kind,
        "gemm_flops_per_sample": _largest_gemm_per_sample(g),
        "module": str(path),
        "function": f"{compiled.kind}_step",
        "arena": [plan.arena_per_sample, plan.arena_fixed],
        "rng": [plan.rng_per_sample, plan.rng_fixed],
        "rng_masks": rng,
        "inputs": [n.id for n in g.sources("input")],
        "labels": [{"id": n.id, "dtype": n.type.dtype, "shape": list(n.type.shape)} for n in g.sources("label")],
        "outputs": {k: place(v) for k, v in g.outputs.items() if place(v) is not None},
        "state": [{"node": n.id, "slot": n.attrs.get("slot"), "param": n.attrs.get("param"),
                   "offset": plan.slots[n.id].offset, "shape": list(n.type.shape)} for n in g.sources("state")],
        "state_size": plan.buckets.get("state", 0),
        "param_size": plan.buckets.get("params", 0),
    }


def _largest_gemm_per_sample(graph) -> int:
    """FLOPs per sample of the step's largest GEMM: the runtime picks BLAS threads from it."""
    largest = 0
    for n in graph.nodes():
        if n.op in ("matmul", "fused_dense"):
            a, b = (graph.type(i) for i in n.inputs[:2])
            k = a.shape[0] if n.attrs.get("transpose_a") else a.shape[-1]
            m, cols = n.type.shape
            dims = [d for d in (m, k, cols) if d != "B"]
            largest = max(largest, 2 * dims[0] * dims[1] if len(dims) == 2 else 0)
    return largest


__all__ += ["step_manifest"]
