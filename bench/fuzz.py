"""Fuzz the loaders of untrusted files for thousands of cases (the harness, its seeds, mutations
and checks are ``tests/fuzz_harness.py``; the short seeded version is ``tests/test_fuzz.py``)::

    python bench/fuzz.py --examples 5000 [--target images|videos|all] [--seed N] [--out DIR]

Prints, per target: cases run, failures (unexpected exception types, hangs) and seconds. Each
failing input is saved under ``--out`` with the traceback. If the process itself dies (a crash in
a C decoder), the input being tried is the ``current*`` file under ``--out``.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import logging
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.fuzz_harness
from tests.fuzz_harness import (  # noqa: E402
    CASE_TIMEOUT_S,
    Hang,
    check_image_case,
    check_video_case,
    image_seeds,
    mutated,
    time_limit,
    video_seeds,
)


# ------------------------------------------------------------------------------------ runner
@dataclass
class Tally:
    """What one target's run found."""

    cases: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # signature -> saved file
    seconds: float = 0.0


def _signature(exc: BaseException) -> str:
    """Exception type plus the innermost fakescope or PIL/av frame, to group repeats."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = next(
        (f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)),
        "?",
    )
    return f"{type(exc).__name__} at {where}"


def run_target(
    name: str,
    seeds: dict[str, bytes],
    check: Callable[[Path, str], str],
    examples: int,
    out: Path,
    seed: int | None,
) -> Tally:
    """Run ``examples`` mutated cases through ``check``; record failures instead of stopping."""
    tally = Tally()
    work = out / f"current-{name}"
    work.mkdir(parents=True, exist_ok=True)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=mutated(seeds), mode=st.sampled_from(("uniform", "interval", "keyframes")))
    def one(case: tuple[str, bytes], mode: str) -> None:
        seed_name, data = case
        path = work / f"case{Path(seed_name).suffix}"
        path.write_bytes(data)
        tally.cases += 1
        try:
            with time_limit(CASE_TIMEOUT_S):
                tally.outcomes[check(path, mode)] += 1
        except (Exception, Hang) as exc:
            tally.outcomes["FAILURE"] += 1
            sig = _signature(exc)
            if sig not in tally.failures:
                digest = hashlib.sha1(data).hexdigest()[:12]
                saved = out / f"{name}-{digest}{path.suffix}"
                saved.write_bytes(data)
                saved.with_suffix(".txt").write_text(
                    f"seed file: {seed_name}, mode: {mode}\n"
                    + "".join(traceback.format_exception(exc))
                )
                tally.failures[sig] = str(saved)

    if seed is not None:
        one = hypothesis_seed(seed)(one)
    start = time.perf_counter()
    one()
    tally.seconds = time.perf_counter() - start
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="cases per target")
    parser.add_argument("--target", choices=("images", "videos", "all"), default="all")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: fixed)")
    parser.add_argument("--out", type=Path, default=None, help="where failing inputs go")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="fakescope-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    faulthandler.enable()
    logging.basicConfig(level=logging.ERROR)  # the loaders log every damaged file they skip
    warnings.simplefilter("ignore")  # PIL warns on every corrupt TIFF tag; only errors count here
    print(f"fuzz: {args.examples} examples per target; failing inputs go to {out}")
    targets: list[tuple[str, dict[str, bytes], Callable[[Path, str], str]]] = []
    if args.target in ("images", "all"):
        targets.append(("images", image_seeds(), lambda p, _mode: check_image_case(p)))
    if args.target in ("videos", "all"):
        targets.append(("videos", video_seeds(), check_video_case))
    total_failures = 0
    for name, seeds, check in targets:
        tally = run_target(name, seeds, check, args.examples, out, args.seed)
        total_failures += len(tally.failures)
        print(
            f"{name:7s} seeds={len(seeds):2d} cases={tally.cases:6d} "
            f"failures={len(tally.failures)} time={tally.seconds:.1f}s "
            f"({tally.cases / max(tally.seconds, 1e-9):.0f} cases/s)"
        )
        top = ", ".join(f"{k}: {v}" for k, v in tally.outcomes.most_common(6))
        print(f"    outcomes: {top}")
        for sig, saved in tally.failures.items():
            print(f"    {sig}  ->  {saved}")
    return 1 if total_failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
