"""Code generation: Python source of Numba kernels from a compiled graph and its memory plan.

Generated steps import this package's hand-written kernels (cpu_kernels, cuda_kernels) at run
time, so this module imports the generators only when called: a compiled trainer loads no IR or
networkx."""

__all__ = ["generate_cpu", "generate_cuda"]


def generate_cpu(compiled) -> str:
    from .cpu import generate

    return generate(compiled)


def generate_cuda(compiled) -> tuple[str, int]:
    """The CUDA launcher's source and its kernel launches per step (kgraph.codegen.cuda)."""
    from .cuda import generate

    return generate(compiled)


def step_manifest(compiled, path) -> dict:
    """How to call the generated step of `compiled` (module at `path`): everything the runtime
    needs, as plain JSON-able data, so a compiled trainer runs without the passes."""
    from ..passes.split import step_parts
    from .base import home_slot, stash_outputs

    g, plan = compiled.graph, compiled.plan

    def place(nid):
        slot = home_slot(plan, nid)
        return {"region": slot.region, "offset": slot.offset, "batch": slot.batch,
                "shape": list(g.type(nid).shape), "dtype": g.type(nid).dtype}

    rng = []
    for n in g.sources("rng"):
        s = plan.slots[n.id]
        rng.append({"node": n.id, "offset": s.offset, "batch": s.batch, "size": s.size, "rate": n.attrs["rate"],
                    "dist": n.attrs.get("dist", "bernoulli"),
                    "shape": list(n.type.shape), "layer": n.attrs.get("layer", "")})
    return {
        "kind": compiled.kind,
        "gemm_flops_per_sample": _largest_gemm_per_sample(g),
        "parts": step_parts(g),
        "module": str(path),
        "function": f"{compiled.kind}_step",
        "arena": [plan.arena_per_sample, plan.arena_fixed],
        "rng": [plan.rng_per_sample, plan.rng_fixed],
        "rng_masks": rng,
        "inputs": [n.id for n in g.sources("input")],
        "labels": [{"id": n.id, "dtype": n.type.dtype, "shape": list(n.type.shape)} for n in g.sources("label")],
        "sample_weights": [{"id": n.id, "dtype": n.type.dtype, "shape": list(n.type.shape)}
                           for n in g.sources("sample_weight")],
        # the whole step also copies them, step by step, into one stash array each (codegen/cpu.py)
        "outputs": {k: place(v) for k, v in stash_outputs(compiled)},
        "state": [{"node": n.id, "slot": n.attrs.get("slot"), "param": n.attrs.get("param"),
                   "offset": plan.slots[n.id].offset, "shape": list(n.type.shape), "init": n.attrs.get("init", 0.0)}
                  for n in g.sources("state")],
        "state_size": plan.buckets.get("state", 0),
        # weights the step itself updates from its batch (batch norm's moving statistics): replicas
        # average them after each step, as Keras's MirroredStrategy reads them (kgraph/runtime/replicas.py)
        "synced": [{"offset": plan.slots[n.inputs[0]].offset, "size": plan.slots[n.inputs[0]].size}
                   for n in g.nodes() if n.op == "moving_average" and plan.slots[n.inputs[0]].region == "params"],
        "param_size": plan.buckets.get("params", 0),
    }


def _largest_gemm_per_sample(graph) -> int:
    """FLOPs per sample of the step's largest GEMM: the runtime picks BLAS threads from it.
    2 x outputs x contraction length, one of which grows with the batch."""
    largest = 0
    for n in graph.nodes():
        if n.op in ("matmul", "fused_dense"):
            a = graph.type(n.inputs[0])
            out_per_sample, out_fixed = n.type.per_batch_size()
            if n.attrs.get("transpose_a"):  # a weight gradient: the contraction runs over the batch
                k_per_sample = a.with_shape(a.shape[:-1]).per_batch_size()[0]
                flops = 2 * out_fixed * k_per_sample
            else:
                flops = 2 * out_per_sample * a.shape[-1]
            largest = max(largest, flops)
    return largest


__all__ += ["step_manifest"]
