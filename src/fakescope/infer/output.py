"""Write prediction rows as they come (table, JSON Lines or CSV) and read them back for ``--resume``."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from fakescope.infer.predictor import Prediction
from fakescope.infer.row import CSV_COLUMNS

FORMATS = ("table", "jsonl", "csv")
#: The format an output file's extension stands for (``.json`` too is written as JSON Lines).
SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_VERDICT_STYLE = {
    "fake": "bold red",
    "fake (declared)": "bold red",
    "real": "bold green",
    "uncertain": "yellow",
    "error": "magenta",
}
#: The table's verdict column is as wide as the longest verdict, so every row lines up.
VERDICT_WIDTH = max(len(v) for v in _VERDICT_STYLE)


def format_for(path: str | Path) -> str | None:
    """The format ``path``'s extension stands for (``out.csv``: ``csv``), or None."""
    return SUFFIX_FORMATS.get(Path(path).suffix.lower())


def choose_format(
    chosen: str | None, output: str | Path | None, terminal: bool
) -> tuple[str, str | None]:
    """The output format, and a warning when an explicit one contradicts the file's extension.

    Args:
        chosen: ``--format`` (None: not given).
        output: ``--output`` (None: stdout).
        terminal: whether stdout is a terminal.

    Returns:
        ``--format`` when given; else the format the output file's extension stands for (see
        :data:`SUFFIX_FORMATS`); else a table on a terminal and JSON Lines otherwise.
    """
    implied = format_for(output) if output else None
    if chosen is None:
        return implied or ("table" if terminal and not output else "jsonl"), None
    if implied is not None and implied != chosen:
        return chosen, (
            f"{output}: --format {chosen} writes {_FORMAT_NAMES[chosen]} into a file whose "
            f"extension says {_FORMAT_NAMES[implied]}; leave --format out to follow the extension"
        )
    return chosen, None


_FORMAT_NAMES = {"table": "a text table", "jsonl": "JSON Lines", "csv": "CSV"}


def repair_tail(path: Path) -> None:
    """Cut a partly written last line (a run killed mid-write) so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        fh.truncate(data.rfind(b"\n") + 1)


def completed_paths(path: str | Path, fmt: str) -> set[str]:
    """Paths already in an output file (JSONL or CSV); a broken last line is repaired first."""
    path = Path(path)
    if not path.exists():
        return set()
    repair_tail(path)
    done: set[str] = set()
    with open(path, encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            done.update(row["path"] for row in csv.DictReader(fh) if row.get("path"))
        else:
            for line in fh:
                try:
                    done.add(json.loads(line)["path"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
    return done


class RowWriter:
    """Writes each row when it arrives and flushes, so a kill loses nothing already scored."""

    def __init__(self, fmt: str, out: str | Path | None = None, append: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
        self.fmt, self.n, self.errors = fmt, 0, 0
        self.counts: dict[str, int] = {}
        self.path = Path(out) if out else None
        fresh = not (append and self.path and self.path.exists() and self.path.stat().st_size > 0)
        self.fh: TextIO = (
            open(self.path, "a" if append else "w", encoding="utf-8", newline="")  # noqa: SIM115 (held open for streaming; closed in close())
            if self.path
            else sys.stdout
        )
        self.console = None
        if fmt == "table":
            from rich.console import Console

            self.console = Console(file=self.fh, highlight=False, soft_wrap=True)
        self.csv = (
            csv.DictWriter(self.fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            if fmt == "csv"
            else None
        )
        if self.csv and fresh:
            self.csv.writeheader()
        if self.console:
            self.console.print(
                f"[bold]{'P(fake)':>8}  {'verdict':<{VERDICT_WIDTH}} {'kind':<5} {'ms':>7}  "
                "path[/bold]"
            )

    def write(self, row: Prediction) -> None:
        """Write one row."""
        self.n += 1
        self.errors += row.verdict == "error"
        self.counts[row.verdict] = self.counts.get(row.verdict, 0) + 1
        if self.fmt == "jsonl":
            self.fh.write(json.dumps(row.to_dict()) + "\n")
        elif self.csv is not None:
            self.csv.writerow({k: _cell(v) for k, v in row.to_dict().items() if k in CSV_COLUMNS})
        else:
            self._table_row(row)
        self.fh.flush()

    def _table_row(self, row: Prediction) -> None:
        from rich.markup import escape

        score = "" if row.score is None else f"{row.score:.3f}"
        style = _VERDICT_STYLE.get(row.verdict, "")
        extra = f"  [magenta]{escape(row.error)}[/magenta]" if row.error else ""
        if row.kind == "video" and row.n_frames:
            extra += f"  ({row.n_frames} frames, {row.aggregate})"
        if row.reason:
            extra += f"  [yellow]({escape(row.reason)})[/yellow]"
        if row.provenance and row.provenance.get("evidence"):
            extra += f"  [cyan]provenance: {escape(row.provenance.get('summary', ''))}[/cyan]"
        self.console.print(
            f"{score:>8}  [{style}]{row.verdict:<{VERDICT_WIDTH}}[/{style}] {row.kind:<5} "
            f"{row.time_ms:>7.1f}  {escape(row.path)}{extra}"
        )

    def summary(self) -> str:
        """A one-line count of verdicts."""
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return f"{self.n} input(s): {parts or 'none'}"

    def close(self) -> None:
        """Flush and close the output file (stdout stays open)."""
        self.fh.flush()
        if self.path:
            os.fsync(self.fh.fileno())
            self.fh.close()


def _cell(value: Any) -> Any:
    """A CSV cell: nested values (provenance) as JSON text."""
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines output back."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
