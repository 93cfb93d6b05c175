"""Compile the fused loss kernels for sm_90 on a machine without a GPU; report registers, spills, vectors.

A fake Triton driver (GPUTarget("cuda", 90, 32), launches that do nothing) is made active, then the real
autograd wrappers run forward and backward on CPU tensors: every kernel variant they launch is compiled
with the specializations a GPU launch would get (16-byte pointer alignment, divisibility of ints), down to
a cubin by the ptxas Triton bundles, and `cuobjdump --dump-resource-usage` reads its register and local
memory (spill) use. Run it in a fresh process: TRITON_INTERPRET must be unset when the kernels are
decorated.

    python tests/kernels/sm90_compile.py [--all] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("sm90_compile: unset TRITON_INTERPRET (kernels must compile, not interpret)")

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.driver import DriverBase
from triton.runtime import driver

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
MAX_REGISTERS = 255


class _Utils:
    def get_device_properties(self, device: int) -> dict:
        return {"max_shared_mem": 232448, "multiprocessor_count": 132, "max_num_regs": 65536, "warpSize": 32}

    def load_binary(self, name, kernel, shared, device):  # no module is loaded: nothing runs
        return None, None, 0, 0, 1024

    def unload_module(self, module) -> None:
        pass


class _NoLaunch:
    def __init__(self, src, metadata) -> None:
        pass

    def __call__(self, *args, **kwargs) -> None:
        pass


class CompileOnlyDriver(DriverBase):
    """An active Triton driver for an H100/H200 (sm_90) that compiles kernels and never launches them."""

    def __init__(self) -> None:
        self.utils = _Utils()
        self.launcher_cls = _NoLaunch

    @classmethod
    def is_active(cls) -> bool:
        return True

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_benchmarker(self):
        # DriverBase declares it abstract, so a driver must define it; Triton calls it only to autotune,
        # and no kdforge kernel autotunes (launch configs come from a table), so it is never reached.
        raise NotImplementedError("the compile-only driver times nothing (kdforge's kernels do not autotune)")

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_device_interface(self):
        return torch.cuda


def _run(
    loss: str,
    b: int,
    c: int,
    dtype: torch.dtype,
    standardize: bool,
    teacher_grad: bool,
    strided: bool,
):
    """Forward + backward of one configuration through the real wrappers (compiles what they launch)."""
    from kdforge.kernels.dist_kd_triton import dist_loss_triton
    from kdforge.kernels.dkd_triton import dkd_loss_triton
    from kdforge.kernels.kd_triton import kd_loss_triton

    width = 2 * c if strided else c
    s = torch.zeros(b, width, dtype=dtype)[:, ::2] if strided else torch.zeros(b, c, dtype=dtype)
    t = torch.zeros(b, width, dtype=dtype)[:, ::2] if strided else torch.zeros(b, c, dtype=dtype)
    s.requires_grad_()
    t.requires_grad_(teacher_grad)
    if loss == "kd":
        value = kd_loss_triton(s, t, 4.0, standardize)
    elif loss == "dkd":
        target = torch.zeros(b, dtype=torch.long)
        value = dkd_loss_triton(s, t, target, 1.0, 8.0, 4.0, standardize)
    else:
        value = dist_loss_triton(s, t, 1.0, 1.0, 4.0, standardize, 1e-8)
    value.backward()


def configurations(full: bool) -> list[tuple]:
    """(loss, B, C, dtype, standardize, teacher_grad, strided). The representative set: the heaviest
    variant of each walk (standardize, both gradients) per loss, 16-bit and fp32, odd and aligned C, plus
    the plain training case; the full set: every shape class x dtype x standardize x gradients x layout."""
    losses = ("kd", "dkd", "dist")
    if full:
        shapes = [(4, 100), (4, 1000), (4, 2049), (4, 4096), (4, 32000), (4, 32001), (256, 32000), (64, 1001)]
        dtypes = (torch.float32, torch.bfloat16, torch.float16)
        return [
            (loss, b, c, dtype, std, tgrad, strided)
            for loss, (b, c), dtype, std, tgrad, strided in itertools.product(
                losses, shapes, dtypes, (False, True), (False, True), (False, True)
            )
        ]
    picks = []
    for loss in losses:
        picks += [
            (loss, 4, 2047, torch.bfloat16, True, True, False),  # one 2048-wide chunk, odd C, 16-bit vectors
            (loss, 4, 32001, torch.float32, True, True, False),  # chunked walk, fp32 vectors
            (loss, 4, 32000, torch.bfloat16, False, False, False),  # the training case
            (loss, 4, 4099, torch.float16, True, True, True),  # strided walk (VEC = 1)
        ]
    picks += [  # DIST's column tiles depend on B: the large-batch shapes of training
        ("dist", 256, 32000, torch.bfloat16, True, True, False),
        ("dist", 256, 32001, torch.float32, False, False, False),
    ]
    return picks


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG/STACK/LOCAL/SHARED of a cubin's one function, from the cuobjdump Triton bundles."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run(
            [str(CUOBJDUMP), "--dump-resource-usage", handle.name], capture_output=True, text=True, check=True
        ).stdout
    found = {key: int(value) for key, value in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text)}
    if "REG" not in found:
        raise RuntimeError(f"no resource usage in cuobjdump output: {text!r}")
    return found


def compiled_kernels() -> list[dict]:
    """Every compiled variant of every kernel in the loss modules, with its resource use and vector loads."""
    import kdforge.kernels.dist_kd_triton as dist_mod
    import kdforge.kernels.dkd_triton as dkd_mod
    import kdforge.kernels.kd_triton as kd_mod

    rows = []
    for module in (kd_mod, dkd_mod, dist_mod):
        for name, fn in vars(module).items():
            if not isinstance(fn, triton.runtime.JITFunction) or not name.endswith("_kernel"):
                continue
            for cache in fn.device_caches.values():
                for kernel in cache[0].values():
                    meta = kernel.metadata
                    ptx = kernel.asm["ptx"]
                    usage = resource_usage(kernel.asm["cubin"])
                    constants = {
                        fn.arg_names[key[0]]: value
                        for key, value in kernel.src.constants.items()
                        if isinstance(value, (bool, int)) and fn.arg_names[key[0]].isupper()
                    }
                    rows.append(
                        {
                            "kernel": name,
                            "constexprs": constants,
                            "signature": {k: v for k, v in kernel.src.signature.items() if "*" in str(v)},
                            "num_warps": meta.num_warps,
                            "registers": usage["REG"],
                            "local_bytes": usage.get("LOCAL", 0),
                            "stack_bytes": usage.get("STACK", 0),
                            "vector_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.v[248]\.", ptx)),
                            "scalar_loads": len(re.findall(r"ld\.global(?:\.\w+)*\.(?:b|u|f)\d+ ", ptx)),
                            "vector_stores": len(re.findall(r"st\.global(?:\.\w+)*\.v[248]\.", ptx)),
                        }
                    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--all", action="store_true", help="every variant, not the representative set")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    driver.set_active(CompileOnlyDriver())
    for config in configurations(args.all):
        _run(*config)
    rows = compiled_kernels()
    bad = [r for r in rows if r["local_bytes"] or r["stack_bytes"] or r["registers"] > MAX_REGISTERS]
    for r in rows:
        flags = " ".join(f"{k}={v}" for k, v in r["constexprs"].items())
        print(
            f"{r['kernel']:<28} warps={r['num_warps']} {flags:<60} regs={r['registers']:>3} "
            f"local={r['local_bytes']} stack={r['stack_bytes']} v-loads={r['vector_loads']} "
            f"v-stores={r['vector_stores']}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(
        f"{len(rows)} kernel variants compiled for sm_90; {len(bad)} spill or use > {MAX_REGISTERS} registers"
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
