"""Candidates derived from the trained teacher by structured pruning (Torch-Pruning, weights inherited):
width at several ratios and, where the architecture has droppable blocks, depth; every channel count rounded
to the target's divisor, BN statistics recalibrated, and each saved as a kdforge checkpoint that records its
shape, so it trains, evaluates, deploys and resumes without the teacher."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from torch import nn

from kdforge.compress.config import NetworkConfig, RunConfig
from kdforge.compress.data import DataBundle
from kdforge.compress.errors import UserError
from kdforge.compress.evaluation import evaluate_model
from kdforge.compress.proxy import cost
from kdforge.compress.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from kdforge.compress.train.meta import network_meta
from kdforge.export.bench.target import Target

from .candidates import Candidate

DEPTH_KEEPS = (0.5, 0.0)  # depth candidates keep half the droppable blocks, or none of them
CALIBRATION_BATCHES = 20
# Channel multiples per target. TensorRT: tensor-core kernels want multiples of 8 in fp16 and 32 in int8
# (NVIDIA's performance guide; ModelOpt's channel_divisor is 32). ONNX Runtime's CPU convolutions (MLAS)
# pack 8 output channels per block on AVX2 (NCHWc), and the rounding only removes a few channels.
DIVISORS = {("tensorrt", "int8"): 32, ("onnxruntime-trt", "int8"): 32}
DEFAULT_DIVISOR = 8


def default_divisor(target: Target) -> int:
    """The channel multiple pruned widths are rounded to on `target` (budget.divisor overrides it)."""
    return DIVISORS.get((target.backend, target.precision), DEFAULT_DIVISOR)


def variants(ratios: list[float], depth: bool) -> list[tuple[str, float | None, float | None]]:
    """(name, depth keep share or None, width ratio or None) of every pruned candidate to make."""

    def share(value: float) -> str:  # 0.375 -> "37_5": names become file names (no dots)
        return f"{100 * value:g}".replace(".", "_")

    found: list[tuple[str, float | None, float | None]] = [(f"w{share(r)}", None, r) for r in ratios]
    for keep in DEPTH_KEEPS if depth else ():
        found.append((f"d{share(keep)}", keep, None))
        found += [(f"d{share(keep)}-w{share(r)}", keep, r) for r in ratios if r >= 0.5]
    return found


def pruned_candidates(
    teacher_path: str,
    config: RunConfig,
    data: DataBundle,
    divisor: int,
    folder: Path,
    log: Callable[[str], None],
) -> list[Candidate]:
    """The teacher pruned to each variant, each saved under `folder/<name>/pruned.safetensors` (reused
    when it is already there: a resumed search prunes nothing twice)."""
    from kdforge.compress.prune.depth import droppable_blocks, prune_depth
    from kdforge.compress.prune.width import prune_width

    teacher, checkpoint = load_model(teacher_path)
    teacher = teacher.eval()
    arch = checkpoint.meta["model"]["arch"]
    options = dict(checkpoint.meta["model"].get("options") or {})
    if checkpoint.meta["model"].get("shape") is not None:
        raise UserError(
            f"teacher {teacher_path!r} is itself a pruned network; prune the original teacher, or set "
            "budget.sources without 'pruned'"
        )
    shape = tuple(data.input_shape)  # (C, H, W), as the pruners and proxies take it
    depth = config.budget.prune_depth and bool(droppable_blocks(teacher))
    found = []
    for name, keep, ratio in variants(config.budget.prune_ratios, depth):
        target = folder / f"pruned-{name}"
        saved = target / "pruned.safetensors"
        if saved.is_file():
            found.append(_reloaded(saved, name))
            continue
        model = copy.deepcopy(teacher)
        if keep is not None:
            model, _dropped = prune_depth(model, keep, shape)
        if ratio is not None:
            model = prune_width(model, shape, ratio, divisor, arch=arch)
        candidate = _save(model, name, arch, options, config, data, saved)
        log(
            f"pruned {arch} {name}: {candidate.params / 1e3:.1f}k parameters, "
            f"validation top-1 {candidate.pruned_val_top1:.1f}% after BN recalibration"
        )
        found.append(candidate)
    return found


def _save(
    model: nn.Module,
    name: str,
    arch: str,
    options: dict,
    config: RunConfig,
    data: DataBundle,
    path: Path,
) -> Candidate:
    """Recalibrate, score on the validation split and save a pruned network; its Candidate."""
    from kdforge.compress.prune.calibrate import recalibrate_bn
    from kdforge.compress.shape import shape_of

    batches = (x for x, _ in data.loader("train", seed=config.seed))
    model = recalibrate_bn(model, batches, max_batches=CALIBRATION_BATCHES)
    val = evaluate_model(model, config, "val", data)["top1"]
    params, macs = cost(model, tuple(data.input_shape))
    network = NetworkConfig(arch=arch, options=options, shape=shape_of(model))
    meta = network_meta(network, data, "student", "pruned", config)
    meta["pruned"] = {"name": name, "val_top1": val, "params": params, "macs": macs}
    save_checkpoint(path.parent, path.stem, model, meta)
    return _candidate(name, arch, options, network.shape, str(path), params, macs, val)


def _reloaded(path: Path, name: str) -> Candidate:
    """A pruned candidate saved by an earlier (interrupted) search."""
    meta = read_checkpoint(path).meta
    model = meta["model"]
    record = meta.get("pruned") or {}
    return _candidate(
        name,
        model["arch"],
        dict(model.get("options") or {}),
        model.get("shape"),
        str(path),
        int(record.get("params", 0)),
        int(record.get("macs", 0)),
        record.get("val_top1"),
    )


def _candidate(
    name: str,
    arch: str,
    options: dict,
    shape: dict | None,
    init: str,
    params: int,
    macs: int,
    val: float | None,
) -> Candidate:
    return Candidate(
        f"pruned-{name}",
        "pruned",
        arch,
        options,
        shape=shape,
        init=init,
        params=params,
        macs=macs,
        pruned_val_top1=val,
    )
