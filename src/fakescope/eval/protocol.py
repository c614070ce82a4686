"""The selection protocol: AUC on sets that image content cannot win, with grouped intervals.

Sets (built by :mod:`fakescope.data.protocol_sets`) have a role:

* ``test``: a generalisation set (content-matched video frames; photographic fakes against
  photos). The protocol score is the mean AUC over these.
* ``control``: a shortcut check whose two classes are both real (a photo and its painterly or
  squashed copy). An AUC near 0.5 means the detector ignores the alteration; the distance from
  0.5 beyond :data:`CONTROL_TOLERANCE` is subtracted from the score, so a detector cannot gain by
  following "looks like a painting" or "was stretched".

Intervals resample whole groups (clips, prompts, photo pairs), never single frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fakescope.eval.intervals import grouped_bootstrap_ci
from fakescope.eval.measures import fast_auc

logger = logging.getLogger(__name__)

CONTROL_TOLERANCE = 0.1


@dataclass(frozen=True)
class SetResult:
    """One protocol set scored: AUC with a grouped 95% interval."""

    name: str
    role: str
    n_real: int
    n_fake: int
    n_groups: int
    auc: float | None
    ci: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return fast_auc(y, s)


def set_groups(rows: pd.DataFrame) -> np.ndarray:
    """The resampling unit of each row: its ``group`` where given, else the row itself."""
    if "group" not in rows.columns:
        return rows["path"].astype(str).to_numpy()
    g = rows["group"].astype(str)
    return np.where(rows["group"].isna() | (g == ""), rows["path"].astype(str), g)


def _scenes(rows: pd.DataFrame) -> np.ndarray | None:
    """The ``scene`` of each row when every row has one (content-matched sets), else None."""
    if "scene" not in rows.columns:
        return None
    scene = rows["scene"].fillna("").astype(str).to_numpy()
    return scene if len(scene) and (scene != "").all() else None


def _within_scene(
    y: np.ndarray, s: np.ndarray, scene: np.ndarray, n_boot: int, seed: int
) -> tuple[float | None, tuple[float, float] | None]:
    """Mean over scenes of the AUC inside each scene, and an interval that resamples scenes.

    Comparing an AI clip with the real clip *of the same scene* is what makes the set
    content-matched; pooling scenes would let a detector win by telling a sunset from a cat.
    """
    per = []
    for name in np.unique(scene):
        m = scene == name
        if len(np.unique(y[m])) == 2:
            per.append(_auc(y[m], s[m]))
    if not per:
        return None, None
    rng = np.random.default_rng(seed)
    boots = [float(np.mean(rng.choice(per, size=len(per)))) for _ in range(max(n_boot, 1))]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(np.mean(per)), (float(lo), float(hi))


def score_set(
    name: str, rows: pd.DataFrame, scores: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> SetResult:
    """AUC of ``scores`` on one set's rows (label 0/1 or real/fake), with a grouped interval.

    Rows with a ``scene`` (content-matched pairs) are scored within each scene; other sets get
    one AUC with an interval that resamples groups.
    """
    y = _labels(rows["label"])
    s = np.asarray(scores, dtype=float)
    ok = np.isfinite(s)
    y, s, groups = y[ok], s[ok], set_groups(rows)[ok]
    scene = _scenes(rows)
    role = str(rows["role"].iloc[0]) if "role" in rows.columns and len(rows) else "test"
    n_real, n_fake, n_groups = int((y == 0).sum()), int((y == 1).sum()), len(set(groups))
    if len(np.unique(y)) < 2:
        return SetResult(name, role, n_real, n_fake, n_groups, None, None)
    if scene is not None:
        auc, ci = _within_scene(y, s, scene[ok], n_boot, seed)
        return SetResult(name, role, n_real, n_fake, n_groups, auc, ci)
    ci = grouped_bootstrap_ci(y, s, groups, _auc, n_boot=n_boot, seed=seed)
    return SetResult(name, role, n_real, n_fake, n_groups, _auc(y, s), ci)


def _labels(col: pd.Series) -> np.ndarray:
    if col.dtype == object or str(col.dtype).startswith("str"):
        return (col.astype(str).str.lower() == "fake").astype(int).to_numpy()
    return col.astype(int).to_numpy()


def summarise(results: Sequence[SetResult]) -> dict[str, Any]:
    """The protocol score: mean test AUC, less control deviations beyond the tolerance."""
    tests = [r.auc for r in results if r.role == "test" and r.auc is not None]
    controls = [r.auc for r in results if r.role == "control" and r.auc is not None]
    mean = float(np.mean(tests)) if tests else math.nan
    penalty = sum(max(0.0, abs(a - 0.5) - CONTROL_TOLERANCE) for a in controls)
    penalty = penalty / len(controls) if controls else 0.0
    return {"test_mean": mean, "control_penalty": penalty, "score": mean - penalty}


def score_manifest(
    manifest: pd.DataFrame, scores: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> list[SetResult]:
    """Every set of a protocol manifest (a ``set`` column), scored from one array of scores."""
    out = []
    scores = np.asarray(scores, dtype=float)
    for name in dict.fromkeys(manifest["set"].astype(str)):
        mask = (manifest["set"].astype(str) == name).to_numpy()
        out.append(score_set(name, manifest[mask], scores[mask], n_boot=n_boot, seed=seed))
    return out


def _fmt(r: SetResult | None) -> str:
    if r is None or r.auc is None:
        return f"{'n/a':<22}"
    ci = f"[{r.ci[0]:.2f},{r.ci[1]:.2f}]" if r.ci else "[n/a]"
    return f"{r.auc:.3f} {ci:<15}"


def format_table(table: Mapping[str, Sequence[SetResult]]) -> str:
    """A plain-text table: one row per detector, one column per set, then the score."""
    names = list(dict.fromkeys(r.name for rows in table.values() for r in rows))
    head = f"{'detector':<26}" + "".join(f"{n:<22}" for n in names)
    head += f"{'test mean':>10} {'penalty':>8} {'score':>7}"
    lines = [head, "-" * len(head)]
    for det, rows in table.items():
        by = {r.name: r for r in rows}
        s = summarise(rows)
        lines.append(
            f"{det:<26}"
            + "".join(_fmt(by.get(n)) for n in names)
            + f"{s['test_mean']:>10.3f} {s['control_penalty']:>8.3f} {s['score']:>7.3f}"
        )
    return "\n".join(lines)


def read_protocol_manifest(path: str | Path) -> pd.DataFrame:
    """A protocol ``manifest.csv`` (or its folder) with absolute paths."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"no protocol manifest at {path}; build the sets with "
            "`fakescope protocol --build DIR --video VIDEO_DIR --pool POOL_DIR`"
        )
    df = pd.read_csv(path)
    missing = {"path", "label", "set"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} is not a protocol manifest: missing column(s) {sorted(missing)}")
    df["path"] = [p if Path(p).is_absolute() else str(path.parent / p) for p in df["path"]]
    return df


def detector_scores(
    detector: Any, manifest: pd.DataFrame, workers: int = 0, cache_dir: str | Path | None = None
) -> np.ndarray:
    """P(fake) of ``detector`` for every manifest row (NaN for files that failed)."""
    from fakescope.eval.scoring import score_frame

    frame = manifest.reset_index(drop=True)
    frame = frame.assign(label=_labels(frame["label"]))
    scored, failures = score_frame(detector, frame, workers=workers, cache_dir=cache_dir)
    for i, reason in failures:
        logger.warning("%s: not scored: %s", frame["path"].iloc[i], reason)
    out = np.full(len(frame), np.nan)
    out[scored.index.to_numpy()] = scored["score"].to_numpy()
    return out
