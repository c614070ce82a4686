"""The model work behind the HTTP API: score one received file, or a batch, as JSON rows.

Everything here is blocking and runs in worker threads (the app bounds how many at once).
Scoring threads share the model; a heatmap takes it alone (see
:class:`~fakescope.serve.limits.SharedExclusiveLock`). Each file is first decoded in a supervised
worker process (:mod:`fakescope.serve.isolate`) unless ``isolate_decode`` is off; a video's frames
come back from it and are scored as they are.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from dataclasses import replace
from typing import Any

from PIL import Image

from fakescope.data.images import load_image
from fakescope.infer.predictor import Predictor, VideoOptions
from fakescope.models.detector import Detector
from fakescope.serve.isolate import DecodeGuard, shared_guard
from fakescope.serve.limits import ApiError, SharedExclusiveLock
from fakescope.serve.settings import ServerSettings
from fakescope.serve.uploads import Upload
from fakescope.version import __version__

logger = logging.getLogger(__name__)

HEATMAP_MIN_SIDE = 256
#: The heatmap overlay sent to the page is at most this many pixels on its long side.
HEATMAP_MAX_SIDE = 1024


class DetectService:
    """Scores uploads with one detector.

    Args:
        detector: a loaded detector.
        settings: the server's limits and video defaults.
    """

    def __init__(self, detector: Detector, settings: ServerSettings) -> None:
        self.detector = detector
        self.settings = settings
        self.video = settings.video
        self.predictor = Predictor.open(
            detector,
            batch_size=settings.batch_size,
            workers=0,
            device=settings.device,
            video=self.video,
            max_pixels=settings.max_pixels,
            amp=settings.amp,
        )
        self.lock = SharedExclusiveLock()
        self.guard: DecodeGuard | None = None
        if settings.isolate_decode:
            self.guard = shared_guard(settings.decode_workers, settings.decode_timeout_s)
            self.guard.start()  # the first upload does not wait for the workers to spawn

    def close(self, wait_s: float = 5.0) -> None:
        """Stop the decoder worker processes (waiting up to ``wait_s`` seconds, then killing)."""
        if self.guard is not None:
            self.guard.close(wait_s)

    # ---------------------------------------------------------------------------------- options
    def video_options(self, frames: int | None) -> VideoOptions:
        """The video options of one request (``frames`` overrides the default count).

        Raises:
            ApiError: 422 when ``frames`` is over ``max_video_frames``.
        """
        if frames is None:
            return self.video
        limit = self.video.max_frames
        if frames > limit:
            raise ApiError(
                422,
                "too_many_frames",
                f"asked for {frames} video frames; this server scores at most {limit} per video",
            )
        return replace(self.video, frames=frames)

    # ------------------------------------------------------------------------------------ files
    def detect(self, up: Upload, explain: bool, video: VideoOptions) -> dict[str, Any]:
        """Score one upload.

        Args:
            up: a received file.
            explain: add a base64 PNG heatmap overlay (images only).
            video: sampling and aggregation for videos.

        Returns:
            The row as a dict (``Prediction.to_dict()``, plus ``heatmap_png`` when explained).

        Raises:
            ApiError: the refusal recorded on the upload, or 422 for a file that cannot be read.
        """
        if up.error is not None:
            raise up.error
        if up.path is None or up.media is None:  # pragma: no cover - receive_files prevents it
            raise ApiError(400, "bad_request", f"{up.name} was not received")
        t0 = time.perf_counter()
        frames = None
        if self.guard is not None:  # a crash there is a 422; so is a clean failure
            checked = self.guard.check(
                str(up.path), up.media.kind, self.settings.max_pixels, up.name, video
            )
            if checked.reason is not None:
                reason = checked.reason.replace(str(up.path), up.name)
                raise _refusal(up.media.kind, up.name, reason)
            frames = checked.frames  # a video's frames, decoded in the worker
        with self.lock.shared():
            pred = self.predictor.predict_file(
                str(up.path), name=up.name, video=video, frames=frames
            )
        if pred.error is not None:
            raise _refusal(pred.kind, up.name, pred.error)
        row = pred.to_dict()
        if explain and pred.kind == "image":
            row.update(self._heatmap(up.name, load_image(up.path, self.settings.max_pixels)))
        row["time_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return row

    def detect_batch(self, uploads: list[Upload], video: VideoOptions) -> list[dict[str, Any]]:
        """Score several uploads in order; a file that fails becomes an error row."""
        rows = []
        for up in uploads:
            try:
                rows.append(self.detect(up, explain=False, video=video))
            except ApiError as e:
                rows.append(self.error_row(up, e.detail))
        return rows

    def error_row(self, up: Upload, reason: str) -> dict[str, Any]:
        """A row with verdict ``error`` for a file that could not be scored."""
        kind = up.media.kind if up.media is not None else "unknown"
        return self.predictor.error_row(up.name, reason, kind).to_dict()

    def _heatmap(self, name: str, img: Image.Image) -> dict[str, Any]:
        """``heatmap_png`` (base64 PNG overlay on the image, at its aspect ratio, the parts the
        model did not see greyed out) and its method."""
        from fakescope.infer.explain import explain_image, overlay_on_image

        try:
            with self.lock.exclusive():
                expl = explain_image(self.detector, img, method=self.settings.explain_method)
        except Exception as e:  # a heatmap failure must not lose the score
            logger.warning("%s: no heatmap: %s", name, e)
            return {"heatmap_png": None, "heatmap_error": f"no heatmap: {e}"}
        shown = overlay_on_image(expl.image or img, expl.image_heatmap, max_side=HEATMAP_MAX_SIDE)
        buf = io.BytesIO()
        _at_least(shown, HEATMAP_MIN_SIDE).save(buf, format="PNG")
        return {
            "heatmap_png": base64.b64encode(buf.getvalue()).decode("ascii"),
            "heatmap_method": expl.method,
        }

    # ------------------------------------------------------------------------------------- info
    def model_info(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: the detector, its metadata and the server's limits."""
        spec, meta, s = self.detector.spec, self.detector.meta or {}, self.settings
        return {
            "name": spec.arch,
            "detector": self.detector.display_name,
            "description": self.detector.description,
            "adapted": meta.get("adapted"),
            "kind": spec.kind,
            "preprocessing": spec.preprocessing.to_dict(),
            "threshold": spec.threshold,
            "uncertain_band": spec.uncertain_band,
            "calibration": spec.calibration,
            "input_filter": spec.input_filter,
            "fakescope_version": __version__,
            "checkpoint_version": meta.get("fakescope_version"),
            "created": meta.get("created"),
            "device": str(self.predictor.device),
            "limits": {
                "max_upload_mb": s.max_upload_mb,
                "max_pixels": s.max_pixels,
                "max_video_frames": self.video.max_frames,
                "max_batch_files": s.max_batch_files,
                "max_batch_mb": s.max_batch_mb,
                "max_tmp_mb": s.max_tmp_mb,
                "max_concurrency": s.max_concurrency,
                "max_queue": s.max_queue,
                "timeout_s": s.timeout_s,
            },
            "video": {
                "sample": self.video.sample,
                "frames": self.video.frames,
                "every_s": self.video.every_s,
                "aggregate": self.video.aggregate,
            },
        }


def _refusal(kind: str, name: str, reason: str) -> ApiError:
    """422 for a file that cannot be used: ``too_many_pixels`` for the pixel limit, else
    ``invalid_video`` or ``invalid_image``."""
    if "decompression bomb" in reason:
        return ApiError(422, "too_many_pixels", f"{name}: {reason}")
    code = "invalid_video" if kind == "video" else "invalid_image"
    return ApiError(422, code, f"{name}: {reason}")


def _at_least(img: Image.Image, side: int) -> Image.Image:
    """Enlarge an image so that its short side is at least ``side`` pixels."""
    short = min(img.size)
    if short >= side:
        return img
    scale = side / short
    return img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
