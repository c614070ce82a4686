"""Expand what a user typed (files, folders, globs, ``-`` for stdin) into a stream of paths."""

from __future__ import annotations

import glob
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from fakescope.data.images import IMAGE_EXTENSIONS
from fakescope.data.video import VIDEO_EXTENSIONS

MEDIA_SUFFIXES = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def _walk(folder: Path) -> Iterator[str]:
    """Media files under ``folder``, recursively, sorted, skipping hidden entries."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_SUFFIXES:
                yield os.path.join(root, name)


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_inputs(items: Iterable[str], stdin: TextIO | None = None) -> Iterator[str]:
    """Yield paths for files, folders (recursive, media files only), globs and ``-`` (stdin lines).

    A named file is always yielded, whatever its extension, so a bad input is reported rather than
    silently dropped; a path that does not exist is yielded too and fails with "file not found".
    """
    for item in items:
        if item == "-":
            for line in stdin or sys.stdin:
                if line.strip():
                    yield line.rstrip("\n")
        elif os.path.isdir(item):
            yield from _walk(Path(item))
        elif _has_magic(item) and not os.path.exists(item):
            for match in sorted(glob.glob(item, recursive=True)):
                yield from _walk(Path(match)) if os.path.isdir(match) else [match]
        else:
            yield item


def missing_files(items: Sequence[str]) -> list[str]:
    """The named files (not ``-``, folders or globs) among ``items`` that do not exist."""
    return [i for i in items if i != "-" and not _has_magic(i) and not os.path.exists(i)]


class NoInputsError(ValueError):
    """The inputs named no image or video at all (an empty folder, a glob matching nothing...)."""


def why_empty(item: str) -> str:
    """Why ``item`` gave :func:`expand_inputs` no path, in words that name it."""
    if item == "-":
        return "- (stdin) gave no paths"
    if os.path.isdir(item):
        return f"{item} {_folder_words(Path(item))}"
    if _has_magic(item) and not os.path.exists(item):
        if not glob.glob(item, recursive=True):
            return f"{item} matches no file"
        return f"{item} matches only folders without image or video files"
    return f"{item} gave no path"  # pragma: no cover - a named file is always yielded


def _folder_words(folder: Path) -> str:
    """``is an empty folder``, or what a folder holds instead of images and videos."""
    suffixes: dict[str, int] = {}
    for _, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                suffix = Path(name).suffix.lower() or "without an extension"
                suffixes[suffix] = suffixes.get(suffix, 0) + 1
    if not suffixes:
        return "is an empty folder"
    common = sorted(suffixes.items(), key=lambda kv: -kv[1])
    kinds = ", ".join(f"{n} {suffix}" for suffix, n in common[:5])
    more = ", ..." if len(common) > 5 else ""
    return f"holds no image or video files, only other files ({kinds}{more})"


def no_inputs_error(items: Sequence[str], why: Callable[[str], str] = why_empty) -> NoInputsError:
    """The error for inputs that gave nothing to score, naming each input and why."""
    known = ", ".join(sorted(MEDIA_SUFFIXES))
    return NoInputsError(
        f"no images or videos found: {'; '.join(why(str(i)) for i in items)} "
        f"(images and videos are files ending in {known})"
    )


def require_inputs(paths: Iterable[str], items: Sequence[str]) -> Iterator[str]:
    """``paths`` (what :func:`expand_inputs` made of ``items``), unchanged, once it is known to
    hold at least one path; only the first is read ahead.

    Raises:
        NoInputsError: ``paths`` is empty; the message names every input and why.
    """
    it = iter(paths)
    first = next(it, None)
    if first is None:
        raise no_inputs_error(items)
    return itertools.chain([first], it)
