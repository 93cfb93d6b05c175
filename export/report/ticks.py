"""Plain latency labels ("0.2 ms", "15 ms", "1.5 s") for report text and for log-scaled plot axes, so a
reader never has to decode matplotlib's default "2x10^-1" tick labels."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from typing import Any, Literal

# Which ticks may carry labels. Minor ticks at 2x..9x a power of ten: the subset (by mantissa) with the
# most labels that keep clear of each other. Evenly spaced minor ticks (matplotlib's fallback when the view
# is too narrow for two such ticks) and major ticks (powers of ten) thin out by stride instead.
_MANTISSA_SETS = ((2, 3, 4, 5, 6, 7, 8, 9), (2, 3, 5, 7), (2, 4, 6), (2, 3, 5), (2, 5), (3,), (2,))
_STRIDES = (1, 2, 3, 4, 5, 10)


def format_ms(value: float, digits: int = 2) -> str:
    """A duration in milliseconds as plain text: `digits` significant digits below 10 ms, whole
    milliseconds from 10 ms, seconds from 1000 ms ("0.012 ms", "0.2 ms", "15 ms", "1.5 s"); never an
    exponent. Not finite: "—"."""
    if not math.isfinite(value):
        return "—"
    number = _plain_number(value, digits)
    if abs(float(number)) < 1000:
        return f"{number} ms"
    return f"{_plain_number(value / 1000, digits)} s"


def _plain_number(value: float, digits: int) -> str:
    """`value` with `digits` significant digits below 10 and none after the point from 10 on, in
    positional notation with trailing zeros dropped."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    shown = f"{value:.{decimals}f}"
    return shown.rstrip("0").rstrip(".") if "." in shown else shown


def plain_log_axis(axis: Any, which: Literal["x", "y"] = "y") -> None:
    """Put `axis`'s (a matplotlib Axes) `which` axis on a log scale labelled in plain milliseconds
    ("0.2 ms", "1 ms", "20 ms") on major and, where they fit, minor ticks."""
    from matplotlib import rcParams
    from matplotlib.ticker import LogLocator

    formatter = _formatter_class()
    if which == "x":
        axis.set_xscale("log")
        target = axis.xaxis
    else:
        axis.set_yscale("log")
        target = axis.yaxis
    target.set_major_locator(LogLocator(base=10))
    target.set_minor_locator(LogLocator(base=10, subs="auto"))
    target.set_major_formatter(formatter(minor=False))
    target.set_minor_formatter(formatter(minor=True))
    # Minor ticks are shorter: pad their labels by the difference, so all labels sit on one line.
    major, minor = (
        rcParams[f"{which}tick.{kind}.size"] + rcParams[f"{which}tick.{kind}.pad"]
        for kind in ("major", "minor")
    )
    target.set_tick_params(which="minor", pad=rcParams[f"{which}tick.minor.pad"] + major - minor)


@functools.cache
def _formatter_class() -> type[Any]:
    """The tick formatter class, defined on first use so `format_ms` alone does not import matplotlib."""
    from matplotlib.ticker import Formatter

    class _MsFormatter(Formatter):
        """Tick labels from `format_ms` for one log axis, only on ticks whose labels (measured in the tick
        font, placed along the axis's length in pixels) keep clear of each other: every major tick when
        they fit, else every 2nd, 3rd... power of ten; minor ticks between them where room is left."""

        def __init__(self, minor: bool) -> None:
            self.minor = minor
            self.digits = 2
            self.shown: list[float] | None = None  # the ticks labelled; None: not decided (every tick)

        def set_locs(self, locs: Any) -> None:
            """Once per draw: which ticks get labels, and how many digits keep the labels apart."""
            super().set_locs(locs)
            if self.axis is None:
                self.shown, self.digits = None, _distinct_digits([float(v) for v in locs if v > 0])
                return
            low, high = sorted(float(v) for v in self.axis.get_view_interval())
            ticks = sorted(float(v) for v in locs if low <= v <= high and v > 0)
            fixed: list[float] = []
            if not self.minor:
                candidates = [[v for v in ticks if round(math.log10(v)) % k == 0] for k in _STRIDES]
            else:
                major = self.axis.get_major_formatter()
                fixed = major.shown if isinstance(major, _MsFormatter) and major.shown is not None else []
                if all(_has_mantissa(v, range(1, 10)) for v in ticks):
                    candidates = [[v for v in ticks if _has_mantissa(v, m)] for m in _MANTISSA_SETS]
                else:
                    candidates = [ticks[::k] for k in _STRIDES]
            clear = [c for c in candidates if self._clear(sorted(c + fixed), low, high)]
            self.shown = max(clear, key=len, default=[] if self.minor else candidates[-1])
            self.digits = _distinct_digits(self.shown + fixed)

        def _clear(self, values: list[float], low: float, high: float) -> bool:
            """Whether labels at `values` keep clear of each other along this axis."""
            if low <= 0 or high <= low:
                return False
            horizontal = self.axis.axis_name == "x"
            box = self.axis.axes.get_window_extent()
            length = box.width if horizontal else box.height
            font = _tick_font(self.axis)
            scale = self.axis.figure.dpi / 72  # points to pixels
            em = font.get_size_in_points() * scale
            span = math.log10(high / low)
            digits = _distinct_digits(values)
            for a, b in itertools.pairwise(values):
                gap = math.log10(b / a) / span * length
                if horizontal:
                    widths = (_width_points(format_ms(v, digits), font) * scale for v in (a, b))
                    need = sum(widths) / 2 + 0.6 * em
                else:
                    need = 1.4 * em
                if gap < need:
                    return False
            return True

        def __call__(self, x: float, pos: int | None = None) -> str:
            if x <= 0:
                return ""
            if self.shown is not None and not any(math.isclose(x, v, rel_tol=1e-9) for v in self.shown):
                return ""
            return format_ms(x, self.digits)

    return _MsFormatter


def _tick_font(axis: Any) -> Any:
    """The font of `axis`'s minor tick labels."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    size = axis.get_tick_params(which="minor").get("labelsize", rcParams[f"{axis.axis_name}tick.labelsize"])
    return FontProperties(size=size)


def _width_points(label: str, font: Any) -> float:
    """How wide `label` is drawn in `font`, in points."""
    from matplotlib.textpath import text_to_path

    return text_to_path.get_text_width_height_descent(label, font, ismath=False)[0]


def _has_mantissa(value: float, mantissas: Iterable[int]) -> bool:
    """Whether `value` is one of `mantissas` times a power of ten."""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in mantissas)


def _distinct_digits(values: list[float]) -> int:
    """The fewest significant digits (2 to 6) at which `values` get distinct labels."""
    return next((d for d in range(2, 7) if len({format_ms(v, d) for v in values}) == len(set(values))), 6)
