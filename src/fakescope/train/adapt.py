"""``fakescope adapt``: teach a probe detector a new generator from a few labelled examples.

The method (measured in ``bench/adapt.py``): the parent's head ``z0(x) = w0 . x + b0`` (``x`` the
L2-normalised embedding) gains a correction, ``z(x) = z0(x) + dw . x + db``, fitted by logistic
loss on the new examples (each class weighing half) **plus replay** of reference rows of the
parent's own training data that ship inside the detector file, with an L2 pull ``lam/2 |dw|^2``
towards the parent. ``dw`` lies in the span of the new examples, so the fit is a Newton solve
in at most ``2k`` dimensions (milliseconds). ``lam`` is chosen by grouped cross-validation inside
the new examples (near-duplicates never straddle folds). The result is an ordinary linear head,
so an adapted detector runs exactly as its parent does.

It measures itself: the AUC on the new examples by nested cross-validation (``lam`` chosen again
inside each fold) against the parent's, with intervals resampled by group, and the before/after
AUC on the parent's reference check rows (rows of its calibration share, per known source). It
writes nothing when the nested estimate does not beat the parent or its interval reaches 0.5
("no gain"), and refuses a detector that loses more than ``margin`` on the check rows unless
forced. The new file records its parent (name and sha256), the
examples' digest and counts, and these measurements (``fakescope info`` shows them); predict,
serve and the page name it "adapted from ...".

The reference rows (:class:`ReferenceRows`: 1,000 replay rows drawn class- and source-balanced
from the rows the head was fitted on, and up to 40 check rows per source from its calibration
rows) are stored compressed to the top 256 principal directions of the training rows, with each
row's parent logit kept exactly; the built-ins carry them (``train.recipes.build``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakescope.models.detector import Detector

logger = logging.getLogger(__name__)

STORE_PREFIX = "__adapt."
STORE_META = "adapt_reference"
REPLAY_N = 1000
CHECK_PER_SOURCE = 40
PCA_RANK = 256
MIN_PER_CLASS = 4
DEFAULT_MARGIN = 0.01
MAX_FOLDS = 8
#: The L2 pull's strengths, from the parent itself (infinite) to nearly free.
LAMBDAS: tuple[float, ...] = (math.inf, *(10.0 ** (-0.5 * i) for i in range(17)))
#: Cosine of two examples' embeddings above which they are one group (near-duplicates).
DUPLICATE_COS = 0.97
#: The guard's distance under which an example is a near-duplicate of the training data.
TRAINING_DUPLICATE_DISTANCE = 0.005


class AdaptError(ValueError):
    """The examples or the detector cannot be adapted (the message says why)."""


# --------------------------------------------------------------------------------------------
# Reference rows that ship inside a detector
# --------------------------------------------------------------------------------------------


@dataclass
class ReferenceRows:
    """Rows of a detector's training data, compressed, for replay and for checking forgetting.

    Attributes:
        mean: ``[D]`` mean of the training rows (L2-normalised embeddings).
        basis: ``[r, D]`` their top principal directions.
        coef: ``[N, r]`` each reference row's coordinates in that basis.
        logit: ``[N]`` the detector's raw logit of each row (exact, not from the compression).
        label: ``[N]`` 0 real, 1 fake.
        source: ``[N]`` index into ``sources``.
        check: ``[N]`` True for check rows (never replayed), False for replay rows.
        sources: source names.
    """

    mean: np.ndarray
    basis: np.ndarray
    coef: np.ndarray
    logit: np.ndarray
    label: np.ndarray
    source: np.ndarray
    check: np.ndarray
    sources: list[str]

    def rows(self, mask: np.ndarray | None = None) -> np.ndarray:
        """The reconstructed rows ``mean + coef @ basis`` (float32), optionally a subset."""
        coef = self.coef if mask is None else self.coef[mask]
        return (self.mean + coef.astype(np.float32) @ self.basis.astype(np.float32)).astype(
            np.float32
        )

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays as a checkpoint stores them (``__adapt.*``: not part of the network)."""
        arrays = {
            "mean": self.mean.astype(np.float32),
            "basis": self.basis.astype(np.float16),
            "coef": self.coef.astype(np.float16),
            "logit": self.logit.astype(np.float32),
            "label": self.label.astype(np.int8),
            "source": self.source.astype(np.int16),
            "check": self.check.astype(np.int8),
        }
        return {STORE_PREFIX + k: v for k, v in arrays.items()}

    def meta(self) -> dict[str, Any]:
        """What the checkpoint's metadata records of them."""
        return {
            "sources": list(self.sources),
            "rank": int(self.basis.shape[0]),
            "replay": int((~self.check).sum()),
            "check": int(self.check.sum()),
        }

    @classmethod
    def from_checkpoint(
        cls, tensors: dict[str, np.ndarray], meta: dict[str, Any]
    ) -> ReferenceRows | None:
        """The rows a checkpoint carries, or None when it has none."""
        info = meta.get(STORE_META)
        names = ("mean", "basis", "coef", "logit", "label", "source", "check")
        if not isinstance(info, dict) or any(STORE_PREFIX + n not in tensors for n in names):
            return None
        t = {n: np.asarray(tensors[STORE_PREFIX + n]) for n in names}
        return cls(
            t["mean"].astype(np.float32),
            t["basis"],
            t["coef"],
            t["logit"].astype(np.float32),
            t["label"].astype(np.int64),
            t["source"].astype(np.int64),
            t["check"].astype(bool),
            [str(s) for s in info.get("sources", [])],
        )


def make_reference(
    x: np.ndarray,
    labels: np.ndarray,
    sources: np.ndarray,
    logits: np.ndarray,
    fit: np.ndarray,
    calib: np.ndarray,
    seed: int = 0,
) -> ReferenceRows:
    """Reference rows for a probe: replay from the ``fit`` rows, checks from the ``calib`` rows.

    Args:
        x: L2-normalised embeddings ``[N, D]`` of the corpus.
        labels, sources: per row.
        logits: the fitted head's raw logits per row.
        fit: rows the head was fitted on; calib: rows held out for its calibration.
    """
    from fakescope.train.tune import balanced_weights

    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    fit_idx = np.flatnonzero(fit)
    mean = x[fit_idx].mean(axis=0)
    rank = min(PCA_RANK, len(fit_idx) - 1, x.shape[1])
    _, _, vt = np.linalg.svd(x[fit_idx] - mean, full_matrices=False)
    basis = vt[:rank].astype(np.float32)
    w = balanced_weights(labels[fit_idx], sources[fit_idx])
    replay = rng.choice(fit_idx, size=min(REPLAY_N, len(fit_idx)), replace=False, p=w)
    checks = []
    for name in np.unique(sources[calib]):
        rows = np.flatnonzero(calib & (sources == name))
        checks.append(rng.permutation(rows)[:CHECK_PER_SOURCE])
    check = np.concatenate(checks) if checks else np.zeros(0, dtype=int)
    idx = np.concatenate([np.sort(replay), np.sort(check)])
    names = sorted(np.unique(sources[idx]).astype(str))
    code = {n: i for i, n in enumerate(names)}
    return ReferenceRows(
        mean=mean.astype(np.float32),
        basis=basis.astype(np.float16),
        coef=((x[idx] - mean) @ basis.T).astype(np.float16),
        logit=np.asarray(logits, dtype=np.float32)[idx],
        label=np.asarray(labels)[idx].astype(np.int64),
        source=np.array([code[str(s)] for s in np.asarray(sources)[idx]], dtype=np.int64),
        check=np.r_[np.zeros(len(replay), bool), np.ones(len(check), bool)],
        sources=names,
    )


# --------------------------------------------------------------------------------------------
# The fit: an L2-pulled logistic correction in the span of the new examples
# --------------------------------------------------------------------------------------------


def _newton_logistic(
    phi: np.ndarray, y: np.ndarray, w: np.ndarray, offset: np.ndarray, lam: float
) -> np.ndarray:
    """``argmin sum w_i log-loss(y_i, offset_i + phi_i . beta + b) + lam/2 |beta|^2`` (b free),
    by damped Newton; returns ``[beta..., b]``."""
    n, r = phi.shape
    p1 = np.hstack([phi, np.ones((n, 1))])
    reg = np.full(r + 1, lam)
    reg[-1] = 1e-8

    def objective(t: np.ndarray) -> float:
        f = offset + p1 @ t
        return float(np.sum(w * (np.logaddexp(0.0, f) - y * f)) + 0.5 * np.sum(reg * t * t))

    theta = np.zeros(r + 1)
    value = objective(theta)
    for _ in range(60):
        f = offset + p1 @ theta
        p = 0.5 * (1.0 + np.tanh(0.5 * f))  # the logistic function, without overflow
        grad = p1.T @ (w * (p - y)) + reg * theta
        hess = (p1 * (w * p * (1.0 - p))[:, None]).T @ p1 + np.diag(reg + 1e-10)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:
            cand = theta - t * step
            new = objective(cand)
            if new <= value:
                break
            t *= 0.5
        if t <= 1e-4:
            break
        done = value - new < 1e-10 * max(1.0, abs(value))
        theta, value = cand, new
        if done:
            break
    return theta


@dataclass
class _Problem:
    """The new examples and the replay rows, in inner-product form."""

    x: np.ndarray  # [n, D] new examples (L2-normalised)
    y: np.ndarray  # [n]
    z0: np.ndarray  # [n] the parent's logits
    replay: np.ndarray | None  # [m, D] replay rows
    y_replay: np.ndarray | None
    z_replay: np.ndarray | None
    w_replay: np.ndarray | None

    def kernel(self) -> np.ndarray:
        return self.x.astype(np.float64) @ self.x.astype(np.float64).T

    def replay_kernel(self) -> np.ndarray | None:
        if self.replay is None:
            return None
        return self.replay.astype(np.float64) @ self.x.astype(np.float64).T


def _fit(
    p: _Problem, k: np.ndarray, kr: np.ndarray | None, train: np.ndarray, lam: float
) -> tuple[np.ndarray, float]:
    """The correction ``(c, db)`` fitted on ``train`` examples: ``dw = x[train].T @ c``."""
    from fakescope.train.tune import balanced_weights

    if math.isinf(lam):
        return np.zeros(int(train.sum())), 0.0
    ev, u = np.linalg.eigh(k[np.ix_(train, train)])
    keep = ev > 1e-10 * max(ev.max(), 1e-30)
    s, u = np.sqrt(ev[keep]), u[:, keep]
    phi, y = u * s, p.y[train]
    w, off = balanced_weights(y, np.zeros(len(y))), p.z0[train]  # each class half
    if kr is not None:
        phi = np.vstack([phi, (kr[:, train] @ u) / s])
        y = np.concatenate([y, p.y_replay])
        w = np.concatenate([w, p.w_replay])
        off = np.concatenate([off, p.z_replay])
    theta = _newton_logistic(phi, y.astype(np.float64), w, off, lam)
    return u @ (theta[:-1] / s), float(theta[-1])


def _cv_folds(
    y: np.ndarray, groups: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """A fold per example: groups dealt round-robin, fakes and reals separately; the fold count
    is at most :data:`MAX_FOLDS` and the number of groups in either class (under 2: no CV)."""
    n_groups = [len(np.unique(groups[y == c])) for c in (0, 1)]
    folds = min(MAX_FOLDS, int((y == 1).sum()), int((y == 0).sum()), *n_groups)
    fold = np.zeros(len(y), dtype=int)
    for c in (1, 0):
        idx = np.flatnonzero(y == c)
        names = list(dict.fromkeys(groups[idx]))
        rng.shuffle(names)
        for j, g in enumerate(names):
            fold[idx[groups[idx] == g]] = j % max(folds, 1)
    return fold, folds


def _out_of_fold(
    p: _Problem, k: np.ndarray, kr: np.ndarray | None, fold: np.ndarray, n_folds: int, lam: float
) -> np.ndarray:
    """Each example's adapted logit from a fit that did not see its fold."""
    oof = p.z0.astype(np.float64).copy()
    for f in range(n_folds):
        train, test = fold != f, fold == f
        c, db = _fit(p, k, None if kr is None else kr, train, lam)
        oof[test] = p.z0[test] + k[np.ix_(test, train)] @ c + db
    return oof


# --------------------------------------------------------------------------------------------
# The command's engine
# --------------------------------------------------------------------------------------------


@dataclass
class AdaptResult:
    """What ``fakescope adapt`` did and measured (JSON-ready with :meth:`to_dict`)."""

    parent: str
    parent_sha256: str
    examples: dict[str, Any]
    written: str | None
    decision: str
    lam: float | None = None
    cv: dict[str, Any] = field(default_factory=dict)
    known: dict[str, Any] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    near_training_duplicates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lam"] = None if self.lam is None or math.isinf(self.lam) else self.lam
        return d

    def summary(self) -> str:
        """A few lines for people."""
        ex = self.examples
        lines = [
            f"parent {self.parent} (sha256 {self.parent_sha256[:12]}): "
            f"{ex['fake']} fake and {ex['real']} real examples in {ex['groups']} groups"
        ]
        if self.cv:
            lines.append(
                f"on the examples (nested cross-validation, {self.cv['folds']} folds): AUC "
                f"{self.cv['before']:.3f} {_ci(self.cv['before_ci'])} -> "
                f"{self.cv['after']:.3f} {_ci(self.cv['after_ci'])}, gain "
                f"{self.cv['after'] - self.cv['before']:+.3f} {_ci(self.cv['gain_ci'])}"
            )
        if self.known:
            lines.append(
                f"on what it knew ({self.known['rows']} reference rows of "
                f"{len(self.known['sources'])} sources): AUC {self.known['before']:.4f} -> "
                f"{self.known['after']:.4f} (change {self.known['after'] - self.known['before']:+.4f})"
            )
            worst = min(self.known["sources"].items(), key=lambda kv: kv[1][1] - kv[1][0])
            lines.append(f"  worst source: {worst[0]} {worst[1][0]:.3f} -> {worst[1][1]:.3f}")
        if self.near_training_duplicates:
            lines.append(
                f"{len(self.near_training_duplicates)} example(s) are near-duplicates of the "
                f"detector's own training images, e.g. {self.near_training_duplicates[0]}"
            )
        for path, reason in self.failures[:10]:
            lines.append(f"skipped {path}: {reason}")
        lines.append(self.decision)
        return "\n".join(lines)


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def adapt(
    examples: str | Path,
    out: str | Path,
    detector: Any = None,
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
    min_per_class: int = MIN_PER_CLASS,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = False,
) -> AdaptResult:
    """Adapt a probe detector to new examples and write it to ``out`` if it gains (see module).

    Args:
        examples: a folder of class folders (as ``fakescope train`` reads) or a manifest.
        out: the new detector file (``.safetensors``); never the parent itself.
        detector: the parent (a path, ``builtin:NAME``, a DetectorRef or an open Detector;
            default: the default built-in).
        margin: the largest AUC loss on the parent's reference check rows to accept.
        force: write even when the loss on what it knew is larger than ``margin``.
        min_per_class: fewest usable examples of each class.

    Raises:
        AdaptError: a detector that is not a probe, too few usable examples, or ``out`` is the
            parent's own file. Files that cannot be read are skipped and listed, never raised.
    """
    from fakescope.data.manifest import build_manifest
    from fakescope.embed.cache import EmbeddingCache, default_cache_dir, embed_frame
    from fakescope.utils import file_digest

    df = build_manifest(examples)  # the examples first: a bad folder fails before any model
    _check_counts(df, min_per_class, examples, "examples")
    parent, parent_file = _open_parent(detector)
    if Path(out).resolve() == parent_file.resolve():
        raise AdaptError(f"{out}: that is the parent detector's own file; write a new one")
    backbone = parent.embedder
    with EmbeddingCache(cache_dir or default_cache_dir(), backbone.cache_id) as cache:
        x, failures = embed_frame(backbone, df, cache=cache, workers=workers, progress=progress)
    bad = [(str(df["path"].iloc[i]), reason) for i, reason in failures]
    ok = ~np.isnan(x).any(axis=1)
    df, x = df[ok].reset_index(drop=True), x[ok]
    _check_counts(df, min_per_class, examples, "readable examples")
    store = ReferenceRows.from_checkpoint(parent.extra_tensors, parent.meta)
    result = AdaptResult(
        parent=parent.display_name,
        parent_sha256=file_digest(parent_file),
        examples=_describe_examples(df),
        written=None,
        decision="",
        failures=bad,
    )
    result.near_training_duplicates = _near_training(parent, x, df)
    learnt = learn(parent, x, df["label"].to_numpy(), store, seed)
    lam, cv, dw, db = learnt.lam, learnt.cv, learnt.dw, learnt.db
    result.examples["groups"] = learnt.groups
    result.lam, result.cv = lam, cv
    if not learnt.worth_writing:
        why = (
            "the examples are too few groups to cross-validate"
            if not cv
            else "no strength of adaptation beat the parent out of fold"
            if math.isinf(lam)
            else "out of fold (nested cross-validation) the adapted detector does not beat the "
            "parent on the examples, or does not clearly separate them (its AUC interval, "
            "resampled by group, reaches 0.5)"
        )
        result.decision = f"no gain: {why}; nothing written"
        return result
    result.known = known_auc(store, dw, db) if store is not None else {}
    lost = result.known["before"] - result.known["after"] if result.known else None
    if store is None and not force:
        result.decision = (
            "refused: this detector carries no reference rows, so forgetting cannot be "
            "measured; pass --force to write it anyway"
        )
        return result
    if lost is not None and lost > margin and not force:
        result.decision = (
            f"refused: AUC on what it knew would drop by {lost:.4f}, more than the margin "
            f"{margin}; pass --force to write it anyway"
        )
        return result
    child = _child(parent, dw, db, x)
    written = _write(child, out, parent, result, store, dw, db, parent.meta)
    result.written = str(written)
    forced = force and (store is None or (lost is not None and lost > margin))
    result.decision = f"wrote {written}" + (" (forced)" if forced else "")
    return result


def _open_parent(detector: Any) -> tuple[Detector, Path]:
    """The parent detector, opened, and its file; a clear error for anything but a probe."""
    from fakescope.infer.backends import open_detector
    from fakescope.zoo import DEFAULT_DETECTOR

    det = (
        detector if isinstance(detector, Detector) else open_detector(detector or DEFAULT_DETECTOR)
    )
    if det.members or det.embedder is None or not hasattr(det.net, "set_head"):
        raise AdaptError(
            f"{det.display_name}: adapt works on probe detectors (a head on a frozen tower: the "
            f"built-ins, `train --family probe`); this one is a {det.spec.kind!r} detector"
        )
    if det.file is None:
        raise AdaptError("the parent detector must come from a file or builtin:NAME")
    return det, det.file


def _check_counts(df: Any, need: int, where: Any, what: str) -> None:
    n_fake, n_real = int((df["label"] == 1).sum()), int((df["label"] == 0).sum())
    if n_fake < need or n_real < need:
        raise AdaptError(
            f"{where}: adapt needs at least {need} fake and {need} real {what}; "
            f"it has {n_fake} fake and {n_real} real"
        )


def _describe_examples(df: Any) -> dict[str, Any]:
    """Counts and a digest of the examples' bytes (sorted file digests and labels)."""
    from fakescope.utils import file_digest

    parts = sorted(
        f"{file_digest(Path(p))}:{int(y)}" for p, y in zip(df["path"], df["label"], strict=True)
    )
    return {
        "fake": int((df["label"] == 1).sum()),
        "real": int((df["label"] == 0).sum()),
        "sha256": hashlib.sha256("\n".join(parts).encode()).hexdigest(),
    }


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32 (the probe's own L2 step)."""
    from fakescope.train.families import l2_rows

    return l2_rows(np.asarray(x, dtype=np.float32)).astype(np.float32)


def _features(parent: Detector, x: np.ndarray) -> np.ndarray:
    """What the head's correction reads: the embeddings, L2-normalised when the head does."""
    return _unit(x) if parent.net.l2 else np.asarray(x, dtype=np.float32)


def _groups(xh: np.ndarray) -> np.ndarray:
    """A group per example, merged where two examples are near-duplicates (cosine at least
    :data:`DUPLICATE_COS`, transitively), so that no near-duplicate straddles CV folds.

    File names are not used: a folder of ``img_001.png ...`` would otherwise be one group."""
    parent = list(range(len(xh)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    u = _unit(xh)
    for i, j in np.argwhere(np.triu(u @ u.T, 1) >= DUPLICATE_COS):
        parent[root(int(i))] = root(int(j))
    return np.array([root(i) for i in range(len(xh))])


def _near_training(parent: Detector, x: np.ndarray, df: Any) -> list[str]:
    """Examples that the guard finds (nearly) in the detector's own training data."""
    guard = getattr(parent.net, "novelty", None)
    if guard is None:
        return []
    sims = _unit(guard.view(x)) @ guard.bank.astype(np.float32).T
    close = np.flatnonzero(1.0 - sims.max(axis=1) < TRAINING_DUPLICATE_DISTANCE)  # the nearest
    return [str(df["path"].iloc[i]) for i in close]


@dataclass
class Learnt:
    """What :func:`learn` found: the strength, the CV figures and the head's correction
    (``dw`` on the head's input features, ``db``; zero when no strength beat the parent)."""

    lam: float
    cv: dict[str, Any]
    dw: np.ndarray
    db: float
    groups: int

    @property
    def worth_writing(self) -> bool:
        """Whether the examples gain clearly enough to write the adapted detector."""
        return not math.isinf(self.lam) and _gains(self.cv)


def learn(
    parent: Detector,
    x: np.ndarray,
    labels: np.ndarray,
    store: ReferenceRows | None,
    seed: int = 0,
) -> Learnt:
    """The adaptation of ``parent``'s head to examples with embeddings ``x`` (as its backbone
    gives them) and ``labels``, with replay of ``store``'s rows (see the module); in memory,
    nothing read or written. ``bench/adapt.py`` runs it on the protocol's folds."""
    from fakescope.train.tune import balanced_weights

    xh = _features(parent, x)
    y = np.asarray(labels).astype(np.float64)
    z0 = parent.head_logits(x).astype(np.float64)
    replay = yr = zr = wr = None
    if store is not None:
        rows = ~store.check
        replay = store.rows(rows)
        yr = store.label[rows].astype(np.float64)
        zr = store.logit[rows].astype(np.float64)
        wr = balanced_weights(store.label[rows], store.source[rows])
    problem = _Problem(xh, y, z0, replay, yr, zr, wr)
    groups = _groups(xh)
    lam, cv = _choose(problem, groups, seed)
    dw, db = np.zeros(xh.shape[1], dtype=np.float32), 0.0
    if not math.isinf(lam):
        k, kr = problem.kernel(), problem.replay_kernel()
        c, db = _fit(problem, k, kr, np.ones(len(y), bool), lam)
        dw = (xh.astype(np.float64).T @ c).astype(np.float32)
    return Learnt(lam, cv, dw, float(db), int(len(np.unique(groups))))


def _select(
    p: _Problem,
    k: np.ndarray,
    kr: np.ndarray | None,
    rows: np.ndarray,
    groups: np.ndarray,
    seed: int,
) -> tuple[float, list[float]]:
    """The strength with the best pooled out-of-fold AUC over ``rows`` (ties: the stronger
    pull), and every strength's AUC; the parent (infinite) when they are too few groups."""
    from fakescope.eval.measures import fast_auc

    sub = _subproblem(p, rows)
    y = sub.y.astype(int)
    fold, n_folds = _cv_folds(y, groups[rows], np.random.default_rng(seed))
    if n_folds < 2:
        return math.inf, []
    ks = k[np.ix_(rows, rows)]
    krs = None if kr is None else kr[:, rows]
    aucs = [fast_auc(y, _out_of_fold(sub, ks, krs, fold, n_folds, lam)) for lam in LAMBDAS]
    best = int(np.flatnonzero(np.asarray(aucs) >= max(aucs) - 1e-12)[0])
    return LAMBDAS[best], aucs


def _subproblem(p: _Problem, rows: np.ndarray) -> _Problem:
    return _Problem(p.x[rows], p.y[rows], p.z0[rows], p.replay, p.y_replay, p.z_replay, p.w_replay)


def _choose(p: _Problem, groups: np.ndarray, seed: int) -> tuple[float, dict[str, Any]]:
    """The strength to fit with (cross-validated on every example), and an honest estimate of
    what adapting gains: nested cross-validation, the strength chosen again inside each outer
    fold's training part, so that choosing among strengths does not flatter the estimate.
    ``{}`` when the examples are too few groups to cross-validate.

    The decision (:func:`_gains`) needs the nested estimate above the parent's AUC and its
    interval, resampled by group, above 0.5: a "new source" no different from the photos, or a
    mix that the correction cannot separate, gives no gain, however the strengths happen to
    rank."""
    from fakescope.eval.intervals import grouped_bootstrap_ci
    from fakescope.eval.measures import fast_auc

    y = p.y.astype(int)
    everything = np.ones(len(y), bool)
    k, kr = p.kernel(), p.replay_kernel()
    lam, aucs = _select(p, k, kr, everything, groups, seed)
    if not aucs:
        return math.inf, {}
    fold, n_folds = _cv_folds(y, groups, np.random.default_rng(seed + 1))
    nested = p.z0.astype(np.float64).copy()
    for f in range(n_folds):
        train, test = fold != f, fold == f
        inner, _ = _select(p, k, kr, train, groups, seed)
        c, db = _fit(p, k, kr, train, inner)
        nested[test] = p.z0[test] + k[np.ix_(test, train)] @ c + db
    before, after = p.z0.astype(np.float64), nested

    def gain(y_: np.ndarray, idx: np.ndarray) -> float:
        i = idx.astype(int)
        return fast_auc(y_, after[i]) - fast_auc(y_, before[i])

    rows = np.arange(len(y), dtype=np.float64)
    cv = {
        "folds": n_folds,
        "before": float(fast_auc(y, before)),
        "before_ci": grouped_bootstrap_ci(y, before, groups, fast_auc, n_boot=500, seed=seed),
        "after": float(fast_auc(y, after)),
        "after_ci": grouped_bootstrap_ci(y, after, groups, fast_auc, n_boot=500, seed=seed),
        "gain_ci": grouped_bootstrap_ci(y, rows, groups, gain, n_boot=500, seed=seed),
        "by_strength": {
            ("parent" if math.isinf(l_) else f"{l_:.1e}"): float(a)
            for l_, a in zip(LAMBDAS, aucs, strict=True)
        },
    }
    return lam, cv


def _gains(cv: dict[str, Any]) -> bool:
    """Whether the nested estimate is a gain worth writing: the adapted AUC above the parent's
    on the examples, and its interval (resampled by group) above 0.5 (see :func:`_choose`).

    Requiring the gain's own interval above 0 as well was measured too (``bench/adapt.py``): it
    refused 87% of the Nano Banana Pro adaptations at k = 16 whose true gain was +0.11 to
    +0.18, while this rule never wrote a detector that lost AUC on the rest of the held-out set
    (worst written: +0.008)."""
    after_ci = cv.get("after_ci")
    return bool(after_ci and cv["after"] > cv["before"] and after_ci[0] > 0.5)


def known_auc(store: ReferenceRows, dw: np.ndarray, db: float) -> dict[str, Any]:
    """AUC on the reference check rows before and after: pooled, and per fake source against
    every check real."""
    from fakescope.eval.measures import fast_auc

    rows = store.check
    before = store.logit[rows].astype(np.float64)
    after = before + store.rows(rows).astype(np.float64) @ dw + db
    y, src = store.label[rows], store.source[rows]
    real = y == 0
    per: dict[str, tuple[float, float]] = {}
    for s in np.unique(src[y == 1]):
        pick = real | ((y == 1) & (src == s))
        per[store.sources[int(s)]] = (
            float(fast_auc(y[pick], before[pick])),
            float(fast_auc(y[pick], after[pick])),
        )
    return {
        "rows": int(rows.sum()),
        "before": float(fast_auc(y, before)),
        "after": float(fast_auc(y, after)),
        "sources": per,
    }


def _child(parent: Detector, dw: np.ndarray, db: float, x: np.ndarray) -> Detector:
    """A copy of the parent with the corrected head, and its guard's bank grown by the
    examples (so the new generator's images do not read as unlike the training data)."""
    child = copy.copy(parent)
    child.spec = copy.deepcopy(parent.spec)
    child.meta = copy.deepcopy(parent.meta)
    net = copy.copy(parent.net)
    net.mean, net.scale = parent.net.mean.copy(), parent.net.scale.copy()
    net.weight = (parent.net.weight + dw * parent.net.scale).astype(np.float32)
    net.bias = (parent.net.bias + np.float32(db + float(dw @ parent.net.mean))).astype(np.float32)
    guard = parent.net.novelty
    if guard is not None:
        net.novelty = copy.copy(guard)
        grown = np.vstack([guard.bank, _unit(guard.view(x)).astype(np.float16)])
        net.novelty.bank = grown
        child.spec.model_kwargs["novelty"] = net.novelty.config()
    child.net = net
    return child


def _write(
    child: Detector,
    out: str | Path,
    parent: Detector,
    result: AdaptResult,
    store: ReferenceRows | None,
    dw: np.ndarray,
    db: float,
    parent_meta: dict[str, Any],
) -> Path:
    """Save the adapted detector with its record and the reference rows (their logits moved to
    the new head, so it can be adapted again)."""
    from fakescope.models.checkpoint import save_checkpoint

    extra: dict[str, Any] = {
        k: v
        for k, v in parent_meta.items()
        if k not in ("format", "format_version", "spec", "created", "fakescope_version")
    }
    record = result.to_dict()
    record.pop("written", None)
    record["parent_adapted"] = parent_meta.get("adapted")
    extra["adapted"] = record
    tensors = {}
    if store is not None:
        moved = copy.copy(store)
        moved.logit = (store.logit + store.rows() @ dw + db).astype(np.float32)
        tensors = moved.tensors()
        extra[STORE_META] = moved.meta()
    return save_checkpoint(out, child, extra_tensors=tensors, **extra)
