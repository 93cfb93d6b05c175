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
from kdforge.compress.methods.base import Distiller
from kdforge.compress.train.checkpoint import load_train_state, load_weights, read_checkpoint, save_checkpoint
from kdforge.compress.train.distributed import DistContext, all_reduce_sum, barrier, sync_buffers
from kdforge.compress.train.metrics import MetricsLog, evaluate, topk_correct
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
        self.checkpoints = self.out_dir / "checkpoints"
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
        last = self.checkpoints / "last.safetensors"
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
        self.method.train()
        self.method.on_epoch_start(epoch, self.config.epochs)
        self.train_loader.set_epoch(epoch, start_batch)
        bar.start_epoch(epoch, self.steps_per_epoch)
        sums: dict[str, float] = dict(partial["sums"]) if partial else {}
        correct, seen = (int(partial["correct"]), int(partial["seen"])) if partial else (0, 0)
        every = self.config.checkpoint_every_steps
        for batch_index, (images, labels) in enumerate(self.train_loader, start=start_batch):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self.batch_index = batch_index  # names the samples if the loss turns non-finite
            logits, losses = self.train_step(images, labels, epoch)
            batch = labels.numel()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value * batch
            correct += topk_correct(logits.detach().float(), labels, (1,))[0]
            seen += batch
            bar.step(sum(losses.values()), 100.0 * correct / max(seen, 1))
            done = batch_index + 1
            if every and done % every == 0 and done < self.steps_per_epoch:
                self._save_last(epoch, {"sums": sums, "correct": correct, "seen": seen}, done)
        names = sorted(sums)
        reduced = all_reduce_sum([sums[n] for n in names] + [correct, seen], self.context, self.device)
        seen_all = max(reduced[-1], 1)
        record = {f"train_{n}": reduced[i] / seen_all for i, n in enumerate(names)}
        record["train_loss"] = sum(record.values())
        record["train_top1"] = 100.0 * reduced[-2] / seen_all
        return record

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor, epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward, loss, backward, clip, step and schedule for one batch; returns logits and loss terms."""
        with self.autocast():
            logits, losses = self.step_module(images, labels)
        total = sum(losses.values())
        if not torch.isfinite(total):
            return self._nonfinite(logits, losses, labels, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.method.trainable_parameters()), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.method.after_step()
        self.global_step += 1
        return logits, {name: float(value.detach()) for name, value in losses.items()}

    def _batch_samples(self) -> list[int] | None:
        """Positions in the training split of the current batch (this epoch's order is a pure function of
        (seed, epoch), so they can be recomputed); None outside the epoch loop."""
        index = getattr(self, "batch_index", None)
        sampler = getattr(self.train_loader.sampler, "inner", None)
        if index is None or sampler is None:
            return None
        size = int(self.train_loader.batch_size)
        return [int(i) for i in list(sampler)[index * size : (index + 1) * size]]

    def _nonfinite(
        self, logits: torch.Tensor, losses: dict[str, torch.Tensor], labels: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """A NaN/inf loss: record the batch in nonfinite.jsonl, then skip the update (policy `skip`, within
        its limit; the schedule still advances) or stop with one line (the last good checkpoint is kept)."""
        terms = {name: float(value.detach()) for name, value in losses.items()}
        record = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "terms": {k: repr(v) for k, v in terms.items()},
            "samples": self._batch_samples(),
            "labels": labels.tolist(),
            "rank": self.context.rank,
        }
        with open(self.out_dir / "nonfinite.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.nonfinite == "skip" and self.skipped_updates < self.config.nonfinite_limit:
            self.skipped_updates += 1
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.global_step += 1
            return logits, {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        limit = (
            f"{self.skipped_updates} updates skipped already (limit {self.config.nonfinite_limit}); "
            if self.config.nonfinite == "skip"
            else ""
        )
        raise UserError(
            f"training diverged: non-finite loss at epoch {epoch + 1}, step {self.global_step} ({shown}); "
            f"{limit}batch recorded in {self.out_dir / 'nonfinite.jsonl'}; lower the lr or enable grad_clip "
            "(the last good checkpoint is kept)"
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
            save_checkpoint(self.checkpoints, "best", self.method.deliverable(), self._meta(epoch, metrics))
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
                {**meta["model"], "arch": spec.arch, "options": dict(spec.options)}
                if "model" in meta
                else None
            )
            companion_meta = {**meta, "role": name, **({"model": model} if model else {})}
            save_checkpoint(self.checkpoints, name, network, companion_meta)
        save_checkpoint(self.checkpoints, "last", self.method.deliverable(), meta, train_state=state)

    # ----------------------------------------------------------------------------------------- fit
    def fit(self) -> TrainResult:
        """Train to the configured number of epochs (continuing from `last` on resume) and test."""
        with deterministic_mode(self.config.deterministic):
            self.setup()
            log = None
            if self.context.is_main:
                log = MetricsLog(self.out_dir / "metrics.jsonl", keep_through_epoch=self.start_epoch)
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
        load_weights(best_model, read_checkpoint(self.checkpoints / "best.safetensors"))
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
            best_path=str(self.checkpoints / "best.safetensors"),
            last_path=str(self.checkpoints / "last.safetensors"),
        )
        if self.context.is_main:
            atomic_write_text(self.out_dir / "result.json", json.dumps(asdict(result), indent=2) + "\n")
        return result
