"""Render fakescope's HTML pages from the Jinja2 templates in ``fakescope/eval/templates``.

Every page extends ``base.html`` (shared CSS, layout, footer) and uses the macros of
``macros.html`` (a table, an inlined PNG, caveats, a warnings box). Autoescaping is on: every
value a page shows is escaped unless it is markup made by a template. Python code passes data,
never HTML; a table cell that is more than one piece of text is a :class:`Rich` (text with inline
caveats) or a :class:`Lines` (lines separated by ``<br>``).
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import jinja2

from fakescope.version import __version__


@dataclass(frozen=True)
class Caveat:
    """A highlighted inline caveat (shown as "Caveat: text")."""

    text: str


@dataclass(frozen=True)
class Rich:
    """Text parts and :class:`Caveat` s shown one after another, separated by spaces."""

    parts: tuple[str | Caveat, ...] = ()

    @classmethod
    def of(cls, *parts: str | Caveat | None) -> Rich:
        """The non-empty ``parts``."""
        return cls(tuple(p for p in parts if p))


@dataclass(frozen=True)
class Lines:
    """Lines of text in one table cell, separated by line breaks."""

    lines: tuple[str, ...]


def fmt(value: Any, digits: int = 3, none: str = "n/a") -> str:
    """A value for display: floats to ``digits`` decimals, integers as they are, None as
    ``none``, anything else as ``str``."""
    if value is None:
        return none
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    return str(int(value)) if isinstance(value, Integral) else f"{value:.{digits}f}"


def ci(interval: Sequence[float] | None) -> str:
    """An interval as ``[lo, hi]``; None becomes an empty string."""
    return "" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def num(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number, or ``n/a`` for None and non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _missing(value: Any) -> bool:
    """None or NaN (a CSV's empty cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def with_ci(row: Mapping[str, Any], key: str, signed: bool = False) -> str:
    """``0.912 [0.880, 0.940]`` from ``row[key]``, ``row[key_lo]`` and ``row[key_hi]``."""
    value, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    text = num(value, signed=signed)
    if _missing(lo) or _missing(hi):
        return text
    return f"{text} [{num(lo, signed=signed)}, {num(hi, signed=signed)}]"


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:`` URI, to inline it in a self-contained page."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _is_numeric(value: Any) -> bool:
    """Whether a table cell is a number (right-aligned); None counts, shown as ``n/a``."""
    return value is None or (isinstance(value, Real) and not isinstance(value, bool))


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment over the packaged templates, autoescaping on."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fakescope.eval", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt=fmt, ci=ci, num=num, png_data_uri=png_data_uri)
    env.tests.update(
        rich=lambda v: isinstance(v, Rich),
        lines=lambda v: isinstance(v, Lines),
        caveat=lambda v: isinstance(v, Caveat),
        numeric=_is_numeric,
    )
    return env


def render(template: str, **context: Any) -> str:
    """Render ``template`` with ``context``, plus ``version`` and ``created`` for the footer."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        environment().get_template(template).render(version=__version__, created=created, **context)
    )
