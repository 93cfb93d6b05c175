"""`kdforge run --budget`: teacher -> candidates (zoo, pruned teacher, the user's list) -> their shipped
files timed on the target -> those within budget short-distilled (validation split) -> the top K distilled
longer -> the winner distilled with the recipe (and trained alone with CE) -> deployed -> report.md.

Every stage is a folder of the run; `--resume` reuses finished stages, the shipped files and the timings
(the journal, search/journal.json), so a killed search re-times and re-trains nothing it finished.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.config import RunConfig, TrainConfig, teacher_data
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.errors import UserError
from kdforge.compress.jobs import Session, distill_student
from kdforge.compress.latency_budget import LatencyBudget, parse_budget
from kdforge.compress.runlock import run_lock
from kdforge.compress.train.checkpoint import load_model
from kdforge.compress.train.trainer import TrainResult
from kdforge.export.bench.target import Target, check_target, parse_target
from kdforge.export.bench.timing import TimingPolicy
from kdforge.export.report.training import StageRow
from kdforge.export.sidecar import sha256

from . import select
from .candidates import (
    Candidate,
    build_candidate,
    listed_candidates,
    proxy_filter,
    with_proxies,
    zoo_candidates,
)

TEACHER = "teacher"  # the teacher's entry in the timings (for share budgets and the plot)
JOURNAL_FORMAT = "kdforge.budget-journal"


@dataclasses.dataclass
class Where:
    """Where the search writes, inside the run folder."""

    root: Path

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def journal(self) -> Path:
        return self.search / "journal.json"

    def candidate(self, name: str) -> Path:
        return self.search / "candidates" / name

    def screen(self, name: str) -> Path:
        return self.search / "screen" / name

    def long(self, name: str) -> Path:
        return self.search / "long" / name


@dataclasses.dataclass
class Remote:
    """Measuring on another device: write a bundle and stop (`bundle`), or decide on its rows (`measured`)."""

    bundle: Path | None = None
    measured: Path | None = None


def checked_request(config: RunConfig, remote: Remote) -> tuple[LatencyBudget, Target]:
    """The budget and the target, each checked before any work (the target must run here unless it is
    measured on another device)."""
    assert config.budget.latency is not None
    budget = parse_budget(config.budget.latency)
    spec = config.budget
    target = parse_target(spec.target, batch=spec.batch, threads=spec.threads)
    here = remote.bundle is None and remote.measured is None
    check_target(target, here=here)
    if here and target.threads is None:  # the report and the cache name the count that ran
        import torch

        target = replace(target, threads=torch.get_num_threads())
    if remote.bundle is not None and remote.measured is not None:
        raise UserError(
            "--bundle writes the files to time on the device and --measured reads them back: give one"
        )
    return budget, target


def run_budget_search(
    config: RunConfig,
    out_dir: str | Path,
    session: Session | None = None,
    *,
    console: Console | None = None,
    recipe_path: str | None = None,
    remote: Remote | None = None,
) -> list[StageRow] | None:
    """The whole search (see the module docstring); None when it stopped after writing a bundle."""
    out = Path(out_dir)
    session = session or Session()
    console = console or Console()
    remote = remote or Remote()
    budget, target = checked_request(config, remote)
    log = _logger(console)
    deploy_options = None
    if config.deploy.enabled and remote.bundle is None:
        from kdforge.export.deploy import recorded_options

        deploy_options = deploy_config_for(config, target, here=remote.measured is None)
        recorded_options(deploy_options)  # a backend missing here fails now, not after the training
    with run_lock(out, enabled=session.context.is_main):
        from kdforge.pipeline import train_teachers

        data = build_data(config.data)
        own = teacher_data(config.data)
        teacher_path, rows = train_teachers(config, out, session, data if own == config.data else None)
        if rows[-1].arch == "torch.export":
            raise UserError(
                f"teacher {teacher_path!r} is a torch.export program: a budget search prunes and times the "
                "teacher, so it needs its weights (a kdforge checkpoint, state dict or safetensors file)"
            )
        search = Search(config, Where(out), session, data, teacher_path, target, budget, log)
        decided = search.run(remote)
        if decided is None:
            return None
        return search.finish(decided, rows, deploy_options, recipe_path, console)


def deploy_config_for(config: RunConfig, target: Target, here: bool) -> Any:
    """The recipe's deploy section for the winner and the teacher: with the target's precision and batch,
    and on the target's backend alone unless the recipe names backends (then the target's is added). One
    backend: deploy times its variants in rotating rounds, and a PyTorch variant's OpenMP threads, still
    spinning after their turn, would slow the target's file next to it (measured here: up to 1.7x on a
    2-core CPU) and blur the re-measurement of the budget."""
    deploy = config.deploy
    precisions = list(dict.fromkeys([*deploy.precisions, target.precision]))
    batches = sorted({*deploy.batches, target.batch})
    backends = deploy.backends
    if backends is None and here:
        backends = [target.backend]
    elif backends is not None and here and target.backend not in backends:
        backends = [*backends, target.backend]
    return replace(deploy, precisions=precisions, batches=batches, backends=backends)


def default_cache_path() -> Path:
    """The measurement cache shared by every search of this user: $KDFORGE_HOME/measurements.jsonl (its
    keys name the machine, the file's bytes and the target, so runs and recipes share it safely)."""
    from kdforge.export.trust import kdforge_home

    return kdforge_home() / "measurements.jsonl"


def _logger(console: Console) -> Any:
    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    return log


class Search:
    """One budget search's state: its candidates, timings and scores, saved in the journal after each
    phase."""

    def __init__(
        self,
        config: RunConfig,
        where: Where,
        session: Session,
        data: DataBundle,
        teacher_path: str,
        target: Target,
        budget: LatencyBudget,
        log: Any,
    ) -> None:
        self.config, self.where, self.session, self.data = config, where, session, data
        self.teacher_path, self.target, self.budget, self.log = teacher_path, target, budget, log
        self.candidates: list[Candidate] = []
        self.files: dict[str, dict[str, str]] = {}  # name -> {"path", "sha256"}
        self.timings: dict[str, dict[str, Any]] = {}
        self.screen: dict[str, float] = {}
        self.long: dict[str, float] = {}
        self.timed_fresh = 0
        self.began = time.perf_counter()
        self._load_journal()

    # ---------------------------------------------------------------- journal (resume)
    def _load_journal(self) -> None:
        path = self.where.journal
        if not (self.session.resume and path.is_file()):
            return
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise UserError(
                f"{str(path)!r} is not a journal kdforge wrote; delete it to search again"
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != JOURNAL_FORMAT:
            raise UserError(f"{str(path)!r} is not a journal kdforge wrote; delete it to search again")
        self.files = {
            name: entry
            for name, entry in (saved.get("files") or {}).items()
            if isinstance(entry, dict) and self._inside(entry.get("path"))
        }
        self.timings = {k: v for k, v in (saved.get("timings") or {}).items() if isinstance(v, dict)}

    def _inside(self, path: Any) -> bool:
        from kdforge.pipeline import inside

        return isinstance(path, str) and inside(path, self.where.search)

    def save(self) -> None:
        """Write the journal (atomically): the candidates, their shipped files, timings and scores."""
        record = {
            "format": JOURNAL_FORMAT,
            "target": asdict(self.target),
            "budget": self.config.budget.latency,
            "candidates": [asdict(c) for c in self.candidates],
            "files": self.files,
            "timings": self.timings,
            "screen": self.screen,
            "long": self.long,
        }
        self.where.search.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.where.journal, json.dumps(record, indent=1) + "\n")

    # ---------------------------------------------------------------- the phases
    def run(self, remote: Remote) -> dict[str, Any] | None:
        """Propose, ship, time (or bundle / import), decide, screen and distill longer; the decision."""
        self.propose()
        self.ship_all()
        if remote.bundle is not None:
            self.write_bundle(remote.bundle)
            return None
        if remote.measured is not None:
            self.import_measured(remote.measured)
        else:
            self.time_all()
        return self.decide()

    def propose(self) -> None:
        """Every candidate with its proxies, then the proxy filter (what is worth timing)."""
        config, spec = self.config, self.config.budget
        teacher, checkpoint = load_model(self.teacher_path)
        found = listed_candidates(spec, config.student)  # first: a zoo duplicate of one of them is dropped
        if "zoo" in spec.sources:
            found += zoo_candidates(spec, checkpoint.meta["model"]["arch"], self.data.input_shape[-1])
        if "pruned" in spec.sources:
            found += self._pruned()
        shape = tuple(self.data.input_shape)  # (C, H, W)
        with_proxies(found, self.data.num_classes, shape, config.seed)
        from kdforge.compress.proxy import cost

        self.teacher_cost = cost(teacher, shape)
        kept = proxy_filter(found, *self.teacher_cost, spec.max_timed)
        self.candidates = found
        self.kept = [c.name for c in kept]
        self.log(
            f"budget search: {len(found)} candidates proposed, {len(kept)} to time on {self.target.label()} "
            "(the rest filtered by proxy or dropped, reasons in the report)"
        )

    def _pruned(self) -> list[Candidate]:
        from .pruned import default_divisor, pruned_candidates

        divisor = self.config.budget.divisor or default_divisor(self.target)
        self.log(f"pruning the teacher with Torch-Pruning (channels rounded to multiples of {divisor})")
        return pruned_candidates(
            self.teacher_path, self.config, self.data, divisor, self.where.search / "candidates", self.log
        )

    def ship_all(self) -> None:
        """The shipped file of the teacher and of every candidate kept (reused when resuming)."""
        from .shipped import ship, shipping_data

        data = shipping_data(self.data, self.config.seed, self.config.name)
        todo = [TEACHER, *self.kept]
        for index, name in enumerate(todo, 1):
            known = self.files.get(name)
            if known and Path(known["path"]).is_file() and sha256(known["path"]) == known["sha256"]:
                continue
            candidate = self._by_name(name)
            if candidate is None:
                model, checkpoint = load_model(self.teacher_path)
                arch = checkpoint.meta["model"]["arch"]
            else:
                model, arch = (
                    build_candidate(candidate, self.data.num_classes, self.config.seed),
                    candidate.arch,
                )
            self.log(f"[{index}/{len(todo)}] exporting {name} for {self.target.label()}")
            shipped = ship(model, name, arch, self.target, data, self.where.candidate(name), lambda m: None)
            if shipped.path is None:
                if candidate is None:
                    raise UserError(f"the teacher cannot ship on {self.target.label()}: {shipped.reason}")
                candidate.status = shipped.reason or "dropped"
                continue
            self.files[name] = {"path": str(shipped.path), "sha256": sha256(shipped.path)}
        for name in self.kept:
            candidate = self._by_name(name)
            if candidate is not None and name in self.files and candidate.status == "proposed":
                candidate.status = "shipped"
        self.save()

    def _by_name(self, name: str) -> Candidate | None:
        return next((c for c in self.candidates if c.name == name), None)

    def _policy(self) -> TimingPolicy:
        return TimingPolicy(warmup_s=0.2, min_iterations=50, min_duration_s=self.config.budget.min_duration_s)

    def time_all(self) -> None:
        """Time every shipped file not timed yet (the measurement cache skips identical ones)."""
        from kdforge.export.bench.cache import MeasurementCache
        from kdforge.export.bench.candidate_timing import time_files

        todo = {n: Path(f["path"]) for n, f in self.files.items() if n not in self.timings}
        if todo:
            cache = MeasurementCache(default_cache_path()) if self.config.budget.cache else None
            self.log(f"timing {len(todo)} files on {self.target.label()}")
            rows = time_files(todo, self.target, self.data.input_shape, self._policy(), cache, self.log)
            self.timed_fresh += sum(1 for row in rows.values() if not row.get("cached"))
            self.timings.update(rows)
            self.save()

    def write_bundle(self, folder: Path) -> None:
        """The files to time on the device, its script, and how to come back."""
        from kdforge.export.bench.bundle import write_bundle

        files = {n: Path(f["path"]) for n, f in self.files.items()}
        write_bundle(folder, files, self.target, self.data.input_shape, self._policy())
        self.log(
            f"wrote {folder}: copy it to the device, run `sh measure.sh` there (docs/budget.md), copy its "
            "results/ back, then run the same command with --measured "
            f"{folder} --resume instead of --bundle"
        )

    def import_measured(self, folder: Path) -> None:
        """Timings measured on the device (kdforge-runner or trtexec rows), checked against our files."""
        from kdforge.export.bench.bundle import import_rows

        rows = import_rows(folder / "results", folder)
        for name, row in rows.items():
            known = self.files.get(name)
            if known is None or row.get("sha256") not in (None, known["sha256"]):
                raise UserError(
                    f"{folder}: {name!r} was not measured on the files this search shipped; write the bundle "
                    "again with --bundle and time it on the device"
                )
        self.timings.update(rows)
        missing = [n for n in self.files if n not in self.timings]
        if TEACHER in missing and self.budget.kind == "teacher-share":
            raise UserError(f"{folder}: the teacher's timing is missing; the share budget needs it")
        self.log(f"imported {len(rows)} timings from {folder}; {len(missing)} files have none")
        self.save()

    def budget_ms(self) -> float:
        percentile = self.config.budget.percentile
        teacher = select.latency_of(self.timings.get(TEACHER), percentile)
        hand = next((c.name for c in self.candidates if c.source == "hand-picked"), None)
        student = select.latency_of(self.timings.get(hand), percentile) if hand else None
        return self.budget.resolve(teacher, student)

    def decide(self) -> dict[str, Any]:
        """Fits, screen, longer distillation, winner."""
        spec, percentile = self.config.budget, self.config.budget.percentile
        budget_ms = self.budget_ms()
        timed = [c for c in self.candidates if c.name in self.timings]
        fits = select.fitting(timed, self.timings, percentile, budget_ms)
        for candidate in timed:
            candidate.status = "fits" if candidate in fits else "over budget"
        if not fits:
            raise select.no_fit_error(
                timed, self.timings, percentile, self.budget.text, budget_ms, self.target.label()
            )
        self.log(
            f"budget {budget_ms:.4g} ms ({percentile}) on {self.target.label()}: {len(fits)} of {len(timed)} "
            "timed candidates fit"
        )
        picks = select.screen_picks(fits, self.timings, percentile, spec.max_screened)
        for index, candidate in enumerate(picks, 1):
            self.log(
                f"[{index}/{len(picks)}] short distillation ({spec.screen_epochs} epochs): {candidate.name}"
            )
            result = self._train(candidate, spec.screen_epochs, self.where.screen(candidate.name))
            self.screen[candidate.name] = result.best_val_top1
            candidate.status = "screened"
            self.save()
        best = select.top_k(self.screen, spec.top_k)
        for index, name in enumerate(best, 1):
            candidate = self._by_name(name)
            assert candidate is not None
            self.log(f"[{index}/{len(best)}] longer distillation ({spec.long_epochs} epochs): {name}")
            result = self._train(candidate, spec.long_epochs, self.where.long(name))
            self.long[name] = result.best_val_top1
            candidate.status = "top-K"
            self.save()
        latency = {n: select.latency_of(self.timings.get(n), percentile) or 0.0 for n in self.long}
        chosen = self._by_name(select.winner(self.long, latency))
        assert chosen is not None
        chosen.status = "winner"
        self.save()
        self.log(f"chosen: {chosen.label()} ({chosen.source}), {latency[chosen.name]:.4g} ms {percentile}")
        return {"winner": chosen, "budget_ms": budget_ms}

    def _train(self, candidate: Candidate, epochs: int, stage: Path) -> TrainResult:
        from kdforge.pipeline import reused_stage

        config = candidate_config(self.config, candidate, epochs)
        return reused_stage(stage, self.session.resume) or distill_student(
            config, stage, self.session, teacher_path=self.teacher_path, method=config.method, data=self.data
        )

    # ---------------------------------------------------------------- the winner
    def finish(
        self,
        decided: dict[str, Any],
        rows: list[StageRow],
        deploy_options: Any,
        recipe_path: str | None,
        console: Console,
    ) -> list[StageRow]:
        """Distill the winner with the recipe (and train it alone with CE), deploy, write the report."""
        from kdforge.pipeline import outcome_of, results_table, train_students, write_results

        winner: Candidate = decided["winner"]
        final = replace(self.config, student=winner.network())
        rows = rows + train_students(final, self.where.root, self.session, self.data, self.teacher_path)
        if not self.session.context.is_main:
            return rows
        write_results(self.where.root, final, rows)
        console.print(results_table(final, rows))
        deployed = None
        if deploy_options is not None:
            from kdforge.pipeline import deploy_roles

            deployed = deploy_roles(
                self.where.root,
                self.teacher_path,
                rows[-1].checkpoint,
                deploy_options,
                self.session.resume,
                console,
            )
        from .report import write_budget_report

        report, sentence = write_budget_report(self, decided, rows, outcome_of(rows), deployed, recipe_path)
        self.log(f"wrote {report}")
        self.log(sentence)
        return rows


def candidate_config(config: RunConfig, candidate: Candidate, epochs: int) -> RunConfig:
    """The recipe with `candidate` as its student, trained for `epochs` (warm-up and milestones scaled)."""
    return replace(config, student=candidate.network(), student_train=shortened(config.student_train, epochs))


def shortened(train: TrainConfig, epochs: int) -> TrainConfig:
    """`train` for `epochs` epochs: warm-up clamped, step milestones scaled to the shorter run."""
    scale = epochs / train.epochs
    milestones = sorted({max(1, round(m * scale)) for m in train.milestones if round(m * scale) < epochs})
    return replace(
        train,
        epochs=epochs,
        warmup_epochs=min(train.warmup_epochs, epochs),
        milestones=milestones or [epochs],
    )
