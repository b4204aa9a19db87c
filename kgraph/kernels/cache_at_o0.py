"""Let Numba cache kernels that call other kernels when it compiles at NUMBA_OPT=0.

A call from one jitted function to another loads the callee's Dispatcher object through a
"numba.dynamic.globals" variable (its address in this process). The call itself goes to the
compiled callee; the load is dead, and at -O1 and above LLVM deletes it. At -O0 nothing does, and
Numba refuses to cache any function whose final module still holds such a variable ("Cannot cache
compiled function ... as it uses dynamic globals"). So at -O0, which the test suite and anyone
debugging a kernel use, `matmul`, `gemm`, `im2col` and the recurrent loops recompiled in every
process (3 to 7 s each for the recurrent ones).

`install()` adds the two cheap passes that delete such dead loads and the variables left unused
(dead-code and global dead-code elimination) after Numba's own -O0 passes. A dynamic global that
is used stays, and Numba still refuses to cache its function, as it should."""

from __future__ import annotations

import os

_installed = False


def install() -> None:
    """Patch Numba's CPU code library at NUMBA_OPT=0; does nothing at any other level, or where
    this Numba's internals differ from those this was written against (0.61 to 0.68)."""
    global _installed
    if _installed or os.environ.get("NUMBA_OPT", "").strip() != "0":
        return
    _installed = True
    import llvmlite.binding as llvm
    from numba.core import codegen

    library = getattr(codegen, "CPUCodeLibrary", None)
    optimize = getattr(library, "_optimize_final_module", None)
    if optimize is None or not hasattr(llvm, "create_new_module_pass_manager"):
        return

    def optimize_then_drop_dead_globals(self):
        optimize(self)
        tuning = llvm.create_pipeline_tuning_options(speed_level=0)
        builder = llvm.create_pass_builder(self._codegen._tm, tuning)
        passes = llvm.create_new_module_pass_manager()
        passes.add_sroa_pass()  # at -O0 the loaded value sits in a local variable's stack slot
        passes.add_dead_code_elimination_pass()
        passes.add_global_dead_code_eliminate_pass()
        passes.run(self._final_module, builder)

    library._optimize_final_module = optimize_then_drop_dead_globals
