"""Small shared helpers: seeding, device choice, atomic file writes, digests, logging set-up.

torch is imported inside the functions that need it, so the command line starts fast.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """Pick CUDA, then MPS, then CPU for ``"auto"``; otherwise use the name given."""
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Return the autocast dtype to use on ``device``, or None for plain fp32.

    Args:
        device: where the model runs.
        amp: ``"auto"`` (bf16 where the hardware supports it), ``"bf16"``, ``"fp16"`` or ``"off"``.
    """
    import torch

    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write a file atomically: ``write(tmp_path)`` then rename over ``path``.

    A process killed at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def setup_logging(verbose: int = 0) -> None:
    """Configure root logging for command-line entry points (never called by the library)."""
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("PIL", "matplotlib", "timm", "urllib3", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def is_interactive() -> bool:
    """True when stderr is a terminal, so progress bars are for a person."""
    return sys.stderr.isatty()


def file_digest(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB chunks; remembered in this process
    while the file's size and modification time stay the same (a detector reopened by the server
    or by a test does not hash its 90 MB backbone again).

    Raises:
        OSError: the file cannot be read (missing, a directory, no permission, ...).
    """
    st = os.stat(path)
    return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """:func:`file_digest` of one version of a file (the cache key is its size and time)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity, as in a container or under ``taskset``),
    not every CPU of the machine; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def cache_root() -> Path:
    """The user cache folder: ``$FAKESCOPE_CACHE`` when set, else ``~/.cache/fakescope``."""
    env = os.environ.get("FAKESCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fakescope"


#: What the cache holds, each in its own folder under :func:`cache_root`.
CACHE_KINDS = ("embeddings", "weights", "onnx", "onnx-edited", "normalised")


def cache_dir(kind: str) -> Path:
    """The one rule for cache folders: ``cache_root() / kind`` (see :data:`CACHE_KINDS`)."""
    if kind not in CACHE_KINDS:
        raise ValueError(f"unknown cache kind {kind!r}; choose from {CACHE_KINDS}")
    return cache_root() / kind


#: Which optional extra brings each top-level module that the core install lacks.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        (
            "torch",
            "torchvision",
            "timm",
            "pandas",
            "pyarrow",
            "sklearn",
            "matplotlib",
            "skimage",
            "pytorch_grad_cam",
            "cv2",
            "imagehash",
            "scipy",
            "jinja2",
        ),
        "train",
    ),
    "ray": "ray",
}

CPU_TORCH_HINT = (
    "for training on a machine without a GPU, install CPU-only torch first: pip install torch "
    "torchvision --index-url https://download.pytorch.org/whl/cpu"
)


def missing_extra_message(
    error: ModuleNotFoundError, what: str, extra: str | None = None
) -> str | None:
    """One line naming the extra to install when ``what`` (e.g. ``fakescope train``) needs a
    module of an optional extra; None when the missing module belongs to no extra.

    ``extra``: the extra that ``what`` needs as a whole (``scan``: ``ray``), named instead of the
    one the module comes with.
    """
    top = (error.name or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None
    extra = extra or EXTRA_OF_MODULE[top]
    hint = f"; {CPU_TORCH_HINT}" if extra == "train" else ""
    return (
        f"{what} needs the {extra!r} extra ({top} is not installed): "
        f"pip install 'fakescope[{extra}]'{hint}"
    )
