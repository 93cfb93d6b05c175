"""Rich progress bars with ETA and live loss/accuracy, plus one summary line per epoch for logs."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from kdforge.compress.train.distributed import DistContext


class TrainProgress:
    """An overall-epochs bar and a per-epoch steps bar (when `bars`), and one summary line per epoch.

    Silent when `enabled` is False (ranks other than 0).
    """

    def __init__(
        self,
        title: str,
        epochs: int,
        start_epoch: int = 0,
        enabled: bool = True,
        bars: bool = True,
        console: Console | None = None,
    ) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not (enabled and bars),
        )
        self._title = title
        self._epochs_task: TaskID | None = None
        self._steps_task: TaskID | None = None
        self._epochs, self._start = epochs, start_epoch

    def __enter__(self) -> TrainProgress:
        self._progress.start()
        self._epochs_task = self._progress.add_task(
            self._title, total=self._epochs, completed=self._start, stats=""
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start_epoch(self, epoch: int, steps: int) -> None:
        """Open the steps bar of epoch `epoch` (0-based)."""
        if self._steps_task is not None:
            self._progress.remove_task(self._steps_task)
        self._steps_task = self._progress.add_task(
            f"  epoch {epoch + 1}/{self._epochs}", total=steps, stats=""
        )

    def step(self, loss: float, accuracy: float) -> None:
        """Advance one step, showing the running loss and training accuracy."""
        if self._steps_task is not None:
            self._progress.update(self._steps_task, advance=1, stats=f"loss {loss:.3f} acc {accuracy:5.1f}%")

    def end_epoch(self, line: str, stats: str) -> None:
        """Print the epoch's summary line above the bars and advance the epochs bar."""
        if not self.enabled:
            return
        self._progress.console.print(line, highlight=False, soft_wrap=True)
        if self._epochs_task is not None:
            self._progress.update(self._epochs_task, advance=1, stats=stats)

    def print(self, line: str) -> None:
        """A line above the bars (main rank only)."""
        if self.enabled:
            self._progress.console.print(line, highlight=False, soft_wrap=True)


def announce(line: str, context: DistContext | None = None) -> None:
    """One line above the progress bars (stderr, like the epoch lines), on the main rank only."""
    if context is None or context.is_main:
        Console(stderr=True, soft_wrap=True).print(line, markup=False, highlight=False)
