"""Expand what a user typed (files, folders, globs, ``-`` for stdin) into a stream of paths."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
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
