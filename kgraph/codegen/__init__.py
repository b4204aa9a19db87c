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


def step_manifest(compiled, path):
    """How to call the generated step of `compiled` (module at `path`): a kgraph.runtime.abi.Manifest,
    everything the runtime needs, so a compiled trainer runs without the passes."""
    from ..passes.split import step_parts
    from ..runtime.abi import BatchArray, Manifest, Place, RandomSource, Size, StateSlot, Synced
    from .base import home_slot, stash_outputs

    g, plan = compiled.graph, compiled.plan

    def place(nid):
        slot = home_slot(plan, nid)
        return Place(slot.region, slot.offset, slot.batch, tuple(g.type(nid).shape), g.type(nid).dtype)

    rng = tuple(
        RandomSource(
            n.id,
            plan.slots[n.id].offset,
            plan.slots[n.id].batch,
            plan.slots[n.id].size,
            n.attrs["rate"],
            n.attrs.get("dist", "bernoulli"),
            tuple(n.type.shape),
            n.attrs.get("layer", ""),
        )
        for n in g.sources("rng")
    )
    return Manifest(
        kind=compiled.kind,
        gemm_flops_per_sample=_largest_gemm_per_sample(g),
        parts=step_parts(g),
        module=str(path),
        function=f"{compiled.kind}_step",
        arena=Size(plan.arena_per_sample, plan.arena_fixed),
        rng=Size(plan.rng_per_sample, plan.rng_fixed),
        rng_masks=rng,
        inputs=tuple(n.id for n in g.sources("input")),
        labels=tuple(BatchArray(n.id, n.type.dtype, tuple(n.type.shape)) for n in g.sources("label")),
        sample_weights=tuple(BatchArray(n.id, n.type.dtype, tuple(n.type.shape)) for n in g.sources("sample_weight")),
        # the whole step also copies them, step by step, into one stash array each (codegen/cpu.py)
        outputs={k: place(v) for k, v in stash_outputs(compiled)},
        state=tuple(
            StateSlot(
                n.id,
                n.attrs.get("slot"),
                n.attrs.get("param"),
                plan.slots[n.id].offset,
                tuple(n.type.shape),
                n.attrs.get("init", 0.0),
            )
            for n in g.sources("state")
        ),
        state_size=plan.buckets.get("state", 0),
        # weights the step itself updates from its batch (batch norm's moving statistics): replicas
        # average them after each step, as Keras's MirroredStrategy reads them (kgraph/runtime/replicas.py)
        synced=tuple(
            Synced(plan.slots[n.inputs[0]].offset, plan.slots[n.inputs[0]].size)
            for n in g.nodes()
            if n.op == "moving_average" and plan.slots[n.inputs[0]].region == "params"
        ),
        param_size=plan.buckets.get("params", 0),
        split_by_samples=any(n.attrs.get("split") == "m" for n in g.nodes()),
    )


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
    recurrent = [graph.type(n.inputs[1]).numel(1) for n in graph.nodes() if n.op == "rnn_sequence"]
    if recurrent:  # a time loop's many small GEMMs, one step's each, set the pace: the runtime times
        return 2 * max(recurrent)  # the thread settings rather than put them all on BLAS's threads
    return largest


__all__ += ["step_manifest"]
