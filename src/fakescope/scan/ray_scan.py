"""Score many images on a Ray cluster and write predict's rows to a Parquet dataset.

The input (folders, globs, files, or CSV/Parquet manifests with a ``path`` column) is expanded
to a sorted list of paths, as ``fakescope predict`` would, and cut into fixed-size *parts*. Every
pending part's paths go through Ray Data's ``map_batches`` with a pool of :class:`ScorerActor`
actors, each holding the model once; rows stream back to the driver, which writes each part as
soon as all of its rows are in.

Output layout (a Parquet dataset; ``pandas.read_parquet(OUTPUT)`` reads it in input order)::

    OUTPUT/part-00000.parquet   rows for paths 0 .. part_size-1, in input order
    OUTPUT/part-00001.parquet   ...
    OUTPUT/_scan.json           settings fingerprint, and per finished part: digest, rows, errors

Each part file is written atomically (temporary name, then rename), so a killed scan leaves only
whole parts. A re-run skips parts whose file exists and whose path list is unchanged
(``_scan.json`` holds a digest of each part's paths), and recomputes the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
import typing
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fakescope.infer.backends import DetectorRef, as_ref, open_detector, resolve
from fakescope.infer.predictor import VideoOptions
from fakescope.infer.row import NESTED_FIELDS, Prediction
from fakescope.utils import atomic_write, atomic_write_text, cpu_count
from fakescope.zoo import is_builtin

logger = logging.getLogger(__name__)

PART_SIZE = 1024
STATE_FILE = "_scan.json"
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")


def _arrow_type(annotation: Any) -> pa.DataType:
    """The Parquet type of a row field: text, float64, int64; nested values are JSON text."""
    plain = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    base = typing.get_origin(plain[0]) or plain[0]
    return {float: pa.float64(), int: pa.int64()}.get(base, pa.string())


#: Predict's row (:class:`fakescope.infer.row.Prediction`), one column per field, in order;
#: ``frames`` and ``provenance`` are JSON strings.
SCHEMA = pa.schema(
    [(name, _arrow_type(f.annotation)) for name, f in Prediction.model_fields.items()]
)
_KEYS = ("_part", "_i")  # where a row goes: part number and position in the part


@dataclass
class Part:
    """A fixed slice of the input paths, written as one Parquet file."""

    index: int
    paths: list[str]

    @property
    def name(self) -> str:
        """The part's file name."""
        return f"part-{self.index:05d}.parquet"

    @property
    def digest(self) -> str:
        """A hash of the part's paths, so a re-run notices a changed input list."""
        return hashlib.sha1("\n".join(self.paths).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class ScanResult:
    """What one :func:`scan` call did."""

    output: Path
    n_inputs: int
    n_parts: int
    parts_skipped: int
    parts_written: int
    rows_written: int
    errors: int
    seconds: float
    startup_seconds: float
    actors: int
    verdicts: dict[str, int] = field(default_factory=dict)
    first_rows_seconds: float = float("nan")
    first_rows: int = 0

    @property
    def images_per_s(self) -> float:
        """Rows written per second of scoring (Ray start-up not counted; actor start-up counted)."""
        return self.rows_written / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_images_per_s(self) -> float:
        """Rows per second after the first rows came back (actor start-up and warm-up left out)."""
        span = self.seconds - self.first_rows_seconds
        rows = self.rows_written - self.first_rows
        return rows / span if span > 0 and rows > 0 else float("nan")

    def summary(self) -> str:
        """A one-line account, like predict's."""
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())) or "none new"
        return (
            f"{self.n_inputs} input(s) in {self.n_parts} part(s): {self.parts_written} written "
            f"({self.rows_written} rows: {parts}), {self.parts_skipped} already done; "
            f"{self.images_per_s:.1f} images/s with {self.actors} actor(s) -> {self.output}"
        )


# ------------------------------------------------------------------------------------- inputs
def is_manifest(item: str) -> bool:
    """True for an existing CSV/Parquet file, read as a manifest of paths."""
    return Path(item).suffix.lower() in MANIFEST_SUFFIXES and os.path.isfile(item)


def manifest_paths(file: str | Path) -> list[str]:
    """The ``path`` column of a CSV/Parquet manifest; relative paths are from the file's folder.

    URLs (``s3://...``) are kept as they are; the scorer opens local paths only, so they come
    back as error rows (mount the bucket and list the mounted paths instead).
    """
    file = Path(file)
    if file.suffix.lower() == ".csv":
        table = pd.read_csv(file, dtype=str, keep_default_na=False)
    else:
        table = pd.read_parquet(file)
    table.columns = [str(c).strip().lower() for c in table.columns]
    if "path" not in table.columns:
        raise ValueError(f"{file}: a manifest needs a 'path' column; found {list(table.columns)}")
    base = file.parent
    return [
        p if os.path.isabs(p) or "://" in p else str(base / p) for p in table["path"].astype(str)
    ]


def list_inputs(inputs: str | Path | Iterable[str | Path]) -> list[str]:
    """Expand folders, globs, files and manifests into the ordered path list predict would score.

    Raises:
        NoInputsError: they hold no image or video at all (the message names each and why).
    """
    from fakescope.infer.inputs import expand_inputs, no_inputs_error

    items = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    paths: list[str] = []
    for item in items:
        paths += manifest_paths(item) if is_manifest(item) else list(expand_inputs([item]))
    if not paths:
        raise no_inputs_error(items, _why_empty)
    return paths


def _why_empty(item: str) -> str:
    """Why an input of ``scan`` gave no path (a manifest may have no rows)."""
    from fakescope.infer.inputs import why_empty

    return f"{item} is a manifest with no rows" if is_manifest(item) else why_empty(item)


def plan_parts(paths: Sequence[str], part_size: int = PART_SIZE) -> list[Part]:
    """Cut ``paths`` into consecutive parts of ``part_size`` (the last may be shorter)."""
    if part_size < 1:
        raise ValueError(f"part size must be at least 1, got {part_size}")
    return [
        Part(k, list(paths[start : start + part_size]))
        for k, start in enumerate(range(0, len(paths), part_size))
    ]


# ---------------------------------------------------------------------------------- resumption
def fingerprint(checkpoint: str | Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What must not change between a scan and its resumption: the model file and scoring settings."""
    st = Path(checkpoint).stat()
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_size": st.st_size,
        "checkpoint_mtime_ns": st.st_mtime_ns,
        **settings,
    }


def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2, sort_keys=True))


def pending_parts(
    out: Path, parts: list[Part], fp: dict[str, Any], force: bool = False
) -> tuple[list[Part], dict[str, Any]]:
    """The parts still to compute, and the state to keep updating as parts are written.

    Raises:
        ValueError: ``out`` holds a scan made with another model or settings (and not ``force``).
    """
    state = _read_state(out)
    if state and state.get("fingerprint") != fp:
        if not force:
            raise ValueError(
                f"{out} holds a scan made with another detector or settings; pass --force to "
                "replace it, or pick another OUTPUT"
            )
        state = {}
    if force:
        for old in out.glob("part-*.parquet"):
            old.unlink()
        state = {}
    done = state.get("parts", {})
    todo = [
        p
        for p in parts
        if not ((out / p.name).exists() and done.get(p.name, {}).get("digest") == p.digest)
    ]
    names = {p.name for p in parts}
    kept = {k: v for k, v in done.items() if k in names}
    return todo, {"fingerprint": fp, "n_inputs": sum(len(p.paths) for p in parts), "parts": kept}


# --------------------------------------------------------------------------------------- rows
def rows_to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Prediction dicts as an Arrow table with :data:`SCHEMA` (nested fields as JSON text)."""
    fixed = [
        {
            **r,
            **{k: None if r.get(k) is None else json.dumps(r[k]) for k in NESTED_FIELDS},
        }
        for r in rows
    ]
    return pa.Table.from_pylist(fixed, schema=SCHEMA)


class ScorerActor:
    """A Ray Data actor: loads the detector once, then scores batches of paths like predict.

    Args:
        detector: which detector and how it runs (opened by
            :func:`fakescope.infer.backends.open_detector`).
        batch_size: images per model call.
        device: ``auto``, ``cpu``, ``cuda``...
        video: :class:`VideoOptions` fields.
        threads: torch intra-op threads for a torch detector (None: leave torch's default).
    """

    def __init__(
        self,
        detector: DetectorRef,
        batch_size: int = 16,
        device: str = "auto",
        video: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        from fakescope.infer.predictor import Predictor

        self.predictor = Predictor.open(
            detector,
            batch_size=batch_size,
            workers=0,
            device=device,
            video=VideoOptions(**(video or {})),
        )
        # torch only where the detector brought it in: an ONNX detector (the default built-in)
        # runs without the training stack, as it does in predict
        torch = sys.modules.get("torch")
        if threads and torch is not None:
            torch.set_num_threads(threads)

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        """Rows for ``batch["path"]`` in order, with the batch's part keys carried through.

        Files are opened by ``batch["_open"]`` (absolute on the driver, so an actor's working
        directory does not matter); rows keep ``path`` as the input named it, as predict does.
        """
        paths, opened = [str(p) for p in batch["path"]], [str(p) for p in batch["_open"]]
        rows = [r.to_dict() for r in self.predictor.predict_paths(opened)]
        if [r["path"] for r in rows] != opened:
            raise RuntimeError("the predictor returned rows out of step with its inputs")
        for row, path in zip(rows, paths, strict=True):
            row["path"] = path
        table = rows_to_table(rows)
        for key in _KEYS:
            table = table.append_column(key, pa.array(batch[key].to_numpy(), type=pa.int64()))
        return table


# -------------------------------------------------------------------------------------- writing
def write_part(out: Path, part: Part, pieces: list[pa.Table]) -> pa.Table:
    """Write one part's rows in input order, atomically; return the written table."""
    table = pa.concat_tables(pieces)
    table = table.take(pc.sort_indices(table, sort_keys=[("_i", "ascending")]))
    table = table.drop_columns(list(_KEYS))
    if table.column("path").to_pylist() != part.paths:
        raise RuntimeError(f"{part.name}: the scored rows do not match the part's paths")
    atomic_write(out / part.name, lambda tmp: pq.write_table(table, tmp))
    return table


def read_scan_table(output: str | Path) -> pa.Table:
    """A scan's rows in input order as one Arrow table (the part files by part number)."""
    files = sorted(Path(output).glob("part-*.parquet"))
    if not files:
        return SCHEMA.empty_table()
    # parts written before a column was added (``detector``) read with it empty
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def read_scan(output: str | Path) -> pd.DataFrame:
    """A scan's rows in input order as a DataFrame (``pandas.read_parquet(output)`` works too)."""
    return read_scan_table(output).to_pandas()


def read_scan_rows(output: str | Path) -> list[dict[str, Any]]:
    """A scan's rows as predict's dicts (``Prediction.to_dict()``), JSON columns decoded again."""
    rows = read_scan_table(output).to_pylist()
    for r in rows:
        for key in ("frames", "provenance"):
            r[key] = None if r.get(key) is None else json.loads(r[key])
    return rows


# ------------------------------------------------------------------------------------------ ray
def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local one; True when this call started it.

    A Ray session already open in this process (``ray.init`` called by the caller) is used as is.
    """
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as e:
            raise ValueError(f"could not reach the Ray cluster at {address!r}: {e}") from e
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, **quiet)
    return True


def _driver_ref(
    detector: DetectorRef | str | Path, backend: str, precision: str, backbone_path: str | None
) -> DetectorRef:
    """The detector reference with its files made absolute, so actors anywhere find them."""
    ref = as_ref(detector, backend, precision, backbone_path)
    path = ref.ref if is_builtin(ref.ref) else _absolute(ref.ref)
    bb = _absolute(ref.backbone_path) if ref.backbone_path else None
    return dataclasses.replace(ref, ref=path, backbone_path=bb)


def _absolute(path: str) -> str:
    """``path`` made absolute against the driver's working directory (URLs left alone)."""
    return path if "://" in path else os.path.abspath(path)


def _quiet_ray_data() -> None:
    """Progress bars only on a terminal; Ray Data's INFO chatter to its log file, not the console."""
    import ray.data

    from fakescope.utils import is_interactive

    bars = is_interactive()
    ray.data.DataContext.get_current().enable_progress_bars = bars
    if logger.isEnabledFor(logging.DEBUG):
        return
    if not bars:  # turned off here, so Ray's "Progress bars disabled. To enable, ..." is noise
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def _score_dataset(
    parts: list[Part],
    actors: int,
    batch_size: int,
    ray_args: dict[str, Any],
    actor_kwargs: dict[str, Any],
):
    """The lazy Ray dataset: the parts' paths, mapped through a pool of :class:`ScorerActor`."""
    import ray.data

    _quiet_ray_data()
    items = [
        {"path": p, "_open": _absolute(p), "_part": part.index, "_i": i}
        for part in parts
        for i, p in enumerate(part.paths)
    ]
    return ray.data.from_items(items).map_batches(
        ScorerActor,
        fn_constructor_kwargs=actor_kwargs,
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        batch_format="pandas",
        **ray_args,
    )


def _collect(
    ds: Any, out: Path, parts: list[Part], state: dict[str, Any], timing: dict[str, float]
) -> tuple[int, dict[str, int]]:
    """Stream rows back, writing each part once complete; return rows written and verdict counts.

    ``timing`` gets ``first_rows_at`` (``perf_counter`` when the first rows came back) and
    ``first_rows`` (how many).
    """
    by_index = {p.index: p for p in parts}
    pieces: dict[int, list[pa.Table]] = {p.index: [] for p in parts}
    have = dict.fromkeys(by_index, 0)
    verdicts: dict[str, int] = {}
    written = 0
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if "first_rows" not in timing:
            timing.update(first_rows_at=time.perf_counter(), first_rows=block.num_rows)
        for k in pc.unique(block["_part"]).to_pylist():
            sub = block.filter(pc.equal(block["_part"], k))
            pieces[k].append(sub)
            have[k] += sub.num_rows
            if have[k] < len(by_index[k].paths):
                continue
            table = write_part(out, by_index[k], pieces.pop(k))
            counts = pd.Series(table.column("verdict").to_pylist()).value_counts().to_dict()
            for v, n in counts.items():
                verdicts[v] = verdicts.get(v, 0) + int(n)
            state["parts"][by_index[k].name] = {
                "digest": by_index[k].digest,
                "rows": table.num_rows,
                "errors": int(counts.get("error", 0)),
            }
            _write_state(out, state)
            written += table.num_rows
    if pieces:
        raise RuntimeError(f"{len(pieces)} part(s) came back incomplete: {sorted(pieces)[:5]}")
    return written, verdicts


def scan(
    inputs: str | Path | Iterable[str | Path],
    output: str | Path,
    detector: DetectorRef | str | Path,
    address: str | None = None,
    actors: int = 2,
    batch_size: int = 16,
    part_size: int = PART_SIZE,
    device: str = "auto",
    backend: str = "torch",
    precision: str = "auto",
    video: VideoOptions | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    num_cpus: int | None = None,
    backbone_path: str | None = None,
    force: bool = False,
) -> ScanResult:
    """Score every input on Ray and write predict's rows as a Parquet dataset in ``output``.

    Args:
        inputs: folders, globs, files, or CSV/Parquet manifests with a ``path`` column.
        output: the output folder (part files plus ``_scan.json``).
        detector: a :class:`DetectorRef`, or a checkpoint (.safetensors, .onnx, builtin:NAME)
            run with ``backend``, ``precision`` and ``backbone_path``.
        address: a Ray cluster (``HOST:6379``, ``auto``, ``ray://HOST:10001``); None starts a local
            cluster for this call (a Ray session already open in this process is used as is).
        actors: size of the actor pool; each actor holds one copy of the model.
        batch_size: paths per ``map_batches`` call, and images per model call.
        part_size: paths per output part file (the unit of resumption).
        device: the actors' device (``auto``: CUDA if the actor was given a GPU).
        backend: ``torch`` or ``onnx``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8`` (as for predict).
        video: video sampling and aggregation, as for predict.
        cpus_per_actor: CPUs Ray reserves for each actor (and its torch threads).
        gpus_per_actor: GPUs Ray reserves for each actor.
        num_cpus: CPUs of the local cluster (None: this machine's count, or enough for the pool).
        backbone_path: for probe detectors, where the frozen backbone file is.
        force: drop whatever ``output`` already holds and start over.

    Returns:
        A :class:`ScanResult`.
    """
    if actors < 1 or batch_size < 1:
        raise ValueError("--actors and --batch-size must be at least 1")
    t0 = time.perf_counter()
    ref = _driver_ref(detector, backend, precision, backbone_path)
    resolved = resolve(ref)
    open_detector(resolved)  # fail early; export ONNX once
    checkpoint = resolved.file
    video = video or VideoOptions()
    parts = plan_parts(list_inputs(inputs), part_size)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"backend": ref.backend, "precision": ref.precision, "video": asdict(video)}
    todo, state = pending_parts(out, parts, fingerprint(checkpoint, settings), force)
    _write_state(out, state)
    logger.info("%d part(s) to score, %d already done", len(todo), len(parts) - len(todo))
    written, verdicts, t1 = 0, {}, time.perf_counter()
    timing: dict[str, float] = {}
    if todo:
        cpus = num_cpus or max(cpu_count(), math.ceil(actors * cpus_per_actor))
        started = connect(address, cpus)
        t1 = time.perf_counter()
        kwargs = {
            "detector": ref,
            "batch_size": batch_size,
            "device": device,
            "video": asdict(video),
            "threads": max(1, int(cpus_per_actor)),
        }
        ray_args: dict[str, Any] = {"num_cpus": cpus_per_actor}
        if gpus_per_actor:
            ray_args["num_gpus"] = gpus_per_actor
        try:
            ds = _score_dataset(todo, actors, batch_size, ray_args, kwargs)
            written, verdicts = _collect(ds, out, todo, state, timing)
        finally:
            if started:
                import ray

                ray.shutdown()
    return ScanResult(
        output=out,
        n_inputs=state["n_inputs"],
        n_parts=len(parts),
        parts_skipped=len(parts) - len(todo),
        parts_written=len(todo),
        rows_written=written,
        errors=sum(int(p.get("errors", 0)) for p in state["parts"].values()),
        seconds=time.perf_counter() - t1,
        startup_seconds=t1 - t0,
        actors=actors,
        verdicts=verdicts,
        first_rows_seconds=timing.get("first_rows_at", math.nan) - t1,
        first_rows=int(timing.get("first_rows", 0)),
    )
