"""The Trainer: one loop for every method (the method contract is all it knows about distillation).

It owns the optimizer, schedule, AMP, DDP wrapping, evaluation, `best`/`last` checkpoints, exact
resume from `last`, the JSONL metrics log and the progress display.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.config import TrainConfig
from kdforge.compress.errors import UserError
from kdforge.compress.layout import RunLayout
from kdforge.compress.methods.base import Distiller
from kdforge.compress.train.checkpoint import load_train_state, load_weights, read_checkpoint, save_checkpoint
from kdforge.compress.train.distributed import DistContext, all_reduce_sum, barrier, sync_buffers
from kdforge.compress.train.metrics import MetricsLog, evaluate
from kdforge.compress.train.optim import build_optimizer, build_scheduler
from kdforge.compress.train.progress import TrainProgress
from kdforge.compress.train.seeding import deterministic_mode, rng_state, seed_everything, set_rng_state
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass
class TrainResult:
    """What a finished run reports: model selection on val, final numbers on test."""

    best_epoch: int
    best_val_top1: float
    test_top1: float  # the `best` checkpoint (selected on val) on the test split
    test_top5: float
    last_test_top1: float  # the final epoch's weights on the test split
    epochs: int
    train_seconds: float
    best_path: str
    last_path: str


class _TrainStep(nn.Module):
    """Routes DDP's forward to the method's `forward_train`, so gradient sync hooks fire as usual."""

    def __init__(self, method: Distiller) -> None:
        super().__init__()
        self.method = method

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.method.forward_train(images, labels)


def autocast_factory(device: torch.device, amp: str) -> Callable[[], Any]:
    """A zero-argument context factory for the configured mixed precision (none on 'off')."""
    if amp == "off":
        return contextlib.nullcontext
    if device.type == "cpu" and amp == "fp16":
        raise UserError("train.amp: fp16 autocast needs CUDA; use amp=bf16 or amp=off on the CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def resume_state(method: Distiller) -> dict[str, torch.Tensor]:
    """State of every trained network other than the deliverable (e.g. a teacher that trains too)."""
    skip = {id(method.deliverable()), *(id(m) for m in method.frozen)}
    state: dict[str, torch.Tensor] = {}
    for name, child in method.named_children():
        if id(child) not in skip:
            state.update({f"{name}.{k}": v for k, v in child.state_dict().items()})
    return state


FLUSH_EVERY = 50  # training steps between host reads of the device-side sums and finiteness flags
MAX_PENDING = 1000  # steps `train_step` keeps unread when nothing flushes (callers outside the epoch loop)


@dataclass
class _PendingStep:
    """What a step leaves for the next flush: enough to record it if its loss turns out non-finite."""

    epoch: int
    step: int
    batch_index: int | None
    labels: torch.Tensor
    losses: dict[str, torch.Tensor]
    finite: torch.Tensor  # 0-dim bool on the training device


class _UpdateGuard:
    """Makes one update conditional on a device-side flag without reading it: copies of everything the
    backward, optimizer step and `after_step` may change (parameters and buffers outside frozen networks,
    optimizer state), restored with torch.where when the flag is False. State the step creates (SGD's
    momentum, AdamW's moments and step on a first step) is reset to zeros, which is what those optimizers
    initialise it to. Optimizer state on another device than the flag (AdamW's step counter stays on the
    host unless capturable) cannot be selected on the device: there the flag is read (one sync)."""

    def __init__(self, trainer: Trainer) -> None:
        frozen = {
            id(t) for module in trainer.method.frozen for t in (*module.parameters(), *module.buffers())
        }
        live = [*trainer.method.parameters(), *trainer.method.buffers()]
        self.tensors = list({id(t): t for t in live if id(t) not in frozen}.values())
        self.optimizer = trainer.optimizer
        with torch.no_grad():
            self.copies = [t.detach().clone() for t in self.tensors]
            self.state = {id(v): (v, v.detach().clone()) for v in self._state_tensors()}

    def _state_tensors(self) -> list[torch.Tensor]:
        return [v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]

    @torch.no_grad()
    def undo_unless(self, finite: torch.Tensor) -> None:
        """Keep the update where `finite` is True, restore the copies where it is False."""
        for tensor, copy_ in zip(self.tensors, self.copies, strict=True):
            torch.where(finite, tensor, copy_, out=tensor)
        host_read: bool | None = None
        for value in self._state_tensors():
            old = self.state.get(id(value), (None, torch.zeros_like(value)))[1]
            if value.device == finite.device:
                torch.where(finite, value, old, out=value)
            else:
                if host_read is None:
                    host_read = bool(finite)
                if not host_read:
                    value.copy_(old)


class Trainer:
    """Trains `method` on `data` with `config`, writing everything under `out_dir`."""

    def __init__(
        self,
        method: Distiller,
        data: Any,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        seed: int,
        device: torch.device,
        meta: dict[str, Any],
        context: DistContext | None = None,
        resume: bool = False,
        progress: bool = True,
        title: str = "train",
    ) -> None:
        self.method, self.data, self.config = method, data, config
        self.out_dir = Path(out_dir)
        self.layout = RunLayout(self.out_dir)  # every file the run writes is named there
        self.checkpoints = self.layout.checkpoints
        self.seed, self.device = seed, device
        self.meta = (
            {**meta, "model": {**meta["model"], **method.deliverable_meta()}} if "model" in meta else meta
        )
        self.context = context or DistContext()
        self.resume, self.show_progress, self.title = resume, progress, title
        self.autocast = autocast_factory(device, config.amp)
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=config.amp == "fp16" and device.type == "cuda"
        )
        self._pending: list[_PendingStep] = []  # steps whose finiteness the host has not read yet

    # ---------------------------------------------------------------------------------------- set-up
    def setup(self) -> None:
        """Build loaders, optimizer, schedule and the (DDP-wrapped) step; restore `last` on resume."""
        seed_everything(self.seed + self.context.rank)
        self.method.to(self.device)
        if self.config.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.train_loader, self.val_loader = self._loader("train"), self._loader("val")
        self.steps_per_epoch = len(self.train_loader)
        self.optimizer = build_optimizer(self.method.param_groups(), self.config)
        self.scheduler = build_scheduler(self.optimizer, self.config, self.steps_per_epoch)
        step = _TrainStep(self.method)
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            step = DistributedDataParallel(step, device_ids=ids)
        self.step_module = step
        self.start_epoch, self.global_step = 0, 0
        self.best_val, self.best_epoch = -math.inf, -1
        self.skipped_updates = 0
        self.start_batch, self.partial = 0, None  # resuming inside an epoch: where, and its running sums
        if self.config.nonfinite == "skip" and self.context.enabled:
            raise UserError(
                "nonfinite: skip needs a single process (every rank must skip together); use stop under DDP"
            )
        if self.resume:
            self._restore()

    def _loader(self, split: str) -> Any:
        return self.data.loader(
            split,
            seed=self.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
            device=self.device,
        )

    def _restore(self) -> None:
        last = self.layout.last
        if not last.is_file():
            return
        checkpoint = read_checkpoint(last)
        state = load_train_state(checkpoint)
        load_weights(self.method.deliverable(), checkpoint)
        extra = state.get("method", {})
        if extra:
            self.method.load_state_dict({**self.method.state_dict(), **extra}, strict=True)
        self.method.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.start_epoch, self.global_step = int(state["epoch"]), int(state["step"])
        self.skipped_updates = int(state.get("skipped_updates", 0))
        self.start_batch, self.partial = int(state.get("batch", 0)), state.get("partial")
        self.best_val, self.best_epoch = float(state["best_val"]), int(state["best_epoch"])

    # ------------------------------------------------------------------------------------- training
    def _train_epoch(
        self, epoch: int, bar: TrainProgress, start_batch: int = 0, partial: dict[str, Any] | None = None
    ) -> dict[str, float]:
        """One epoch of `train_step`s. Loss sums and top-1 hits accumulate on the device; the host reads
        them (with the finiteness of every step since the last read) every FLUSH_EVERY steps for the
        progress display, before a mid-epoch checkpoint and at the end of the epoch."""
        self.method.train()
        self.method.on_epoch_start(epoch, self.config.epochs)
        self.train_loader.set_epoch(epoch, start_batch)
        bar.start_epoch(epoch, self.steps_per_epoch)
        sums = {n: self._device_sum(v) for n, v in (partial["sums"] if partial else {}).items()}
        correct = self._device_sum(int(partial["correct"]) if partial else 0, torch.int64)
        seen = int(partial["seen"]) if partial else 0
        shown = (0.0, 0.0)
        every = self.config.checkpoint_every_steps
        for batch_index, (images, labels) in enumerate(self.train_loader, start=start_batch):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self.batch_index = batch_index  # names the samples if the loss turns non-finite
            logits, losses = self.train_step(images, labels, epoch)
            batch = labels.numel()
            finite = torch.isfinite(sum(losses.values()))  # as train_step's: a skipped step adds no loss
            for name, value in losses.items():
                term = torch.where(finite, value.double() * batch, 0.0)
                sums[name] = sums[name] + term if name in sums else term
            correct = correct + logits.detach().float().topk(1, dim=1).indices[:, 0].eq(labels).sum()
            seen += batch
            done = batch_index + 1
            checkpoint = every and done % every == 0 and done < self.steps_per_epoch
            if checkpoint or done % FLUSH_EVERY == 0:
                values = self._flush([*sums.values(), correct])
                sums_now = dict(zip(sums, values, strict=False))
                shown = (sum(sums_now.values()) / max(seen, 1), 100.0 * values[-1] / max(seen, 1))
                if checkpoint:
                    partial_now = {"sums": sums_now, "correct": int(values[-1]), "seen": seen}
                    self._save_last(epoch, partial_now, done)
            bar.step(*shown)
        names = sorted(sums)
        values = self._flush([sums[n] for n in names] + [correct])
        reduced = all_reduce_sum([*values[:-1], int(values[-1]), seen], self.context, self.device)
        seen_all = max(reduced[-1], 1)
        record = {f"train_{n}": reduced[i] / seen_all for i, n in enumerate(names)}
        record["train_loss"] = sum(record.values())
        record["train_top1"] = 100.0 * reduced[-2] / seen_all
        return record

    def _device_sum(self, value: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """A running sum kept on the training device (float64 for loss sums, int64 for counts)."""
        return torch.tensor(value, dtype=dtype, device=self.device)

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward, loss, backward, clip, step and schedule for one batch; returns the logits and the
        detached loss terms (device tensors). Nothing is read back to the host: whether the loss was
        finite is read at the next flush (`_flush`), and under nonfinite=skip the update of a non-finite
        step is undone on the device (`_UpdateGuard`) before the flush finds and records it."""
        with self.autocast():
            logits, losses = self.step_module(images, labels)
        total = sum(losses.values())
        finite = torch.isfinite(total.detach())
        self.optimizer.zero_grad(set_to_none=True)
        guard = _UpdateGuard(self) if self.config.nonfinite == "skip" else None
        self.scaler.scale(total).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.method.trainable_parameters()), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()  # the schedule advances on a skipped step too
        self.method.after_step()
        if guard is not None:
            guard.undo_unless(finite)
        terms = {name: value.detach() for name, value in losses.items()}
        index = getattr(self, "batch_index", None)
        self._pending.append(_PendingStep(epoch, self.global_step, index, labels, terms, finite))
        self.global_step += 1
        if len(self._pending) >= MAX_PENDING:  # callers outside the epoch loop (benchmarks) flush here
            self._flush([])
        return logits, terms

    def _flush(self, extra: list[torch.Tensor]) -> list[float]:
        """Read the finiteness flag of every step since the last flush and the `extra` device scalars
        in one transfer; record the non-finite steps (`_nonfinite`). Returns the extra values."""
        pending, self._pending = self._pending, []
        flags = [step.finite.to(torch.float64) for step in pending]
        values = (
            torch.stack([*flags, *(x.to(torch.float64) for x in extra)]).tolist() if flags or extra else []
        )
        for step, ok in zip(pending, values[: len(flags)], strict=True):
            if not ok:
                self._nonfinite(step)
        return values[len(flags) :]

    def _batch_samples(self, index: int | None) -> list[int] | None:
        """Positions in the training split of batch `index` of the current epoch (this epoch's order is a
        pure function of (seed, epoch), so they can be recomputed); None outside the epoch loop."""
        sampler = getattr(self.train_loader.sampler, "inner", None)
        if index is None or sampler is None:
            return None
        size = int(self.train_loader.batch_size)
        return [int(i) for i in list(sampler)[index * size : (index + 1) * size]]

    def _nonfinite(self, step: _PendingStep) -> None:
        """A step whose loss was NaN/inf: record its batch in nonfinite.jsonl, then count it as a skipped
        update (policy `skip`, within its limit: the update was already undone on the device and the
        schedule advanced) or stop with one line (the last good checkpoint is kept: flushes come before
        every checkpoint, so nothing from this step on is saved)."""
        terms = {name: float(value) for name, value in step.losses.items()}
        record = {
            "epoch": step.epoch + 1,
            "step": step.step,
            "terms": {k: repr(v) for k, v in terms.items()},
            "samples": self._batch_samples(step.batch_index),
            "labels": step.labels.tolist(),
            "rank": self.context.rank,
        }
        with open(self.layout.nonfinite, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.nonfinite == "skip" and self.skipped_updates < self.config.nonfinite_limit:
            self.skipped_updates += 1
            return
        self._pending = []
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        limit = (
            f"{self.skipped_updates} updates skipped already (limit {self.config.nonfinite_limit}); "
            if self.config.nonfinite == "skip"
            else ""
        )
        saved = self.layout.last.is_file()
        raise UserError(
            f"training diverged: non-finite loss at epoch {step.epoch + 1}, step {step.step} ({shown}); "
            f"{limit}batch recorded in {self.layout.nonfinite}; lower the lr or enable grad_clip "
            f"({'the last good checkpoint is kept' if saved else 'no checkpoint was saved before it'})"
        )

    # ---------------------------------------------------------------------------------- checkpoints
    def _meta(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.meta,
            "epoch": epoch,
            "epochs": self.config.epochs,
            "step": self.global_step,
            "metrics": metrics,
            "best": {"epoch": self.best_epoch, "val_top1": self.best_val},
        }

    def _save(self, epoch: int, metrics: dict[str, Any], improved: bool) -> None:
        if not self.context.is_main:
            return
        if improved:
            save_checkpoint(
                self.checkpoints, self.layout.best.stem, self.method.deliverable(), self._meta(epoch, metrics)
            )
        if epoch % self.config.checkpoint_every == 0 or epoch == self.config.epochs:
            self._save_last(epoch, None, 0, metrics)

    def _save_last(
        self, epoch: int, partial: dict[str, Any] | None, batch: int, metrics: dict[str, Any] | None = None
    ) -> None:
        """`last` (and the companions) with everything an exact resume needs: after `epoch` epochs and
        `batch` more steps (mid-epoch, with the epoch's running sums in `partial`)."""
        if not self.context.is_main:
            return
        meta = self._meta(epoch, metrics or {})
        if batch:
            meta["batch_in_epoch"] = batch
        state = {
            "epoch": epoch,
            "batch": batch,
            "partial": partial,
            "step": self.global_step,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "skipped_updates": self.skipped_updates,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "method": resume_state(self.method),
        }
        for name, (network, spec) in self.method.companions().items():  # before `last`: it commits
            model = (
                {  # a companion (SATE's teacher) has its own architecture: never the student's pruned shape
                    **{k: v for k, v in meta["model"].items() if k != "shape"},
                    "arch": spec.arch,
                    "options": dict(spec.options),
                }
                if "model" in meta
                else None
            )
            companion_meta = {**meta, "role": name, **({"model": model} if model else {})}
            save_checkpoint(self.checkpoints, name, network, companion_meta)
        save_checkpoint(
            self.checkpoints, self.layout.last.stem, self.method.deliverable(), meta, train_state=state
        )

    # ----------------------------------------------------------------------------------------- fit
    def fit(self) -> TrainResult:
        """Train to the configured number of epochs (continuing from `last` on resume) and test."""
        with deterministic_mode(self.config.deterministic):
            self.setup()
            log = None
            if self.context.is_main:
                log = MetricsLog(self.layout.metrics, keep_through_epoch=self.start_epoch)
            started = time.perf_counter()
            try:
                with TrainProgress(
                    self.title,
                    self.config.epochs,
                    self.start_epoch,
                    enabled=self.context.is_main,
                    bars=self.show_progress,
                ) as bar:
                    if self.start_epoch > 0 or self.start_batch > 0:
                        inside = f", step {self.start_batch} of the next" if self.start_batch else ""
                        done = f"{self.start_epoch}/{self.config.epochs}{inside}"
                        bar.print(f"{self.title}: resuming after epoch {done}")
                    for epoch in range(self.start_epoch, self.config.epochs):
                        self._run_epoch(epoch, bar, log)
                barrier(self.context)
                return self._finish(time.perf_counter() - started)
            finally:
                if log is not None:
                    log.close()

    def _run_epoch(self, epoch: int, bar: TrainProgress, log: MetricsLog | None) -> None:
        """Train one epoch (from the resume point when it is the first), validate, log, checkpoint."""
        tick = time.perf_counter()
        first = epoch == self.start_epoch
        record = self._train_epoch(
            epoch, bar, self.start_batch if first else 0, self.partial if first else None
        )
        sync_buffers(self.method, self.context)
        val = self._validate()
        improved = val["top1"] >= self.best_val  # ties: the later epoch
        if improved:
            self.best_val, self.best_epoch = val["top1"], epoch + 1
        record.update(
            {
                "epoch": epoch + 1,
                "step": self.global_step,
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "val_loss": val["loss"],
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - tick,
            }
        )
        if log is not None:  # log first: a resume drops lines past its checkpoint
            log.write(record)
        self._save(epoch + 1, record, improved)
        bar.end_epoch(self._summary_line(record), f"best val {self.best_val:.1f}%")

    def _validate(self) -> dict[str, float]:
        """Top-1/top-5/loss of the method (its student) on the validation split, over every rank."""
        self.method.eval()
        return evaluate(
            self.method, self.val_loader, self.device, self.context, self.autocast, self.config.channels_last
        )

    def _summary_line(self, record: dict[str, Any]) -> str:
        return (
            f"{self.title} epoch {record['epoch']:>3}/{self.config.epochs}  loss {record['train_loss']:.4f}  "
            f"train {record['train_top1']:5.1f}%  val {record['val_top1']:5.1f}% "
            f"(best {self.best_val:5.1f}% @{self.best_epoch})  lr {record['lr']:.4g}  "
            f"{record['epoch_seconds']:.1f}s"
        )

    def _finish(self, seconds: float) -> TrainResult:
        test_loader = self._loader("test")
        self.method.eval()
        last = evaluate(
            self.method, test_loader, self.device, self.context, self.autocast, self.config.channels_last
        )
        best_model = copy.deepcopy(self.method.deliverable())
        load_weights(best_model, read_checkpoint(self.layout.best))
        best_model.to(self.device).eval()
        best = evaluate(
            best_model, test_loader, self.device, self.context, self.autocast, self.config.channels_last
        )
        result = TrainResult(
            best_epoch=self.best_epoch,
            best_val_top1=self.best_val,
            test_top1=best["top1"],
            test_top5=best["top5"],
            last_test_top1=last["top1"],
            epochs=self.config.epochs,
            train_seconds=seconds,
            best_path=str(self.layout.best),
            last_path=str(self.layout.last),
        )
        if self.context.is_main:
            atomic_write_text(self.layout.result_json, json.dumps(asdict(result), indent=2) + "\n")
        return result
