"""The typed metric report (:class:`fakescope.eval.result.Metrics`): ``metrics.json`` keeps the
keys, key order, values and null-versus-absent of the dict it replaced; a saved file loads back
equal; older files load; a wrong-typed file is one clear error naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from fakescope.cli import main
from fakescope.eval.measures import FPR_TARGETS
from fakescope.eval.metrics import compute_metrics
from fakescope.eval.result import FoldSummary, Metrics, MetricsFileError, Spread

GOLDEN = Path(__file__).parent / "data" / "metrics_golden.json"
#: The input of ``data/metrics_golden.json``, which the dict-returning ``compute_metrics`` of
#: b7e8a82 wrote (``json.dumps(m, indent=2, default=str, ensure_ascii=False)``, as
#: ``write_report`` does).
GOLDEN_Y = [0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1, 0]
GOLDEN_S = [0.1, 0.9, 0.4, 0.35, 0.8, 0.6, 0.7, 0.2, 0.05, 0.95, 0.55, 0.45, 0.3, 0.15]
GOLDEN_GROUPS = {"group": ["a"] * 5 + ["b"] * 5 + ["c", "c", None, "d"]}


def _golden_metrics() -> Metrics:
    return compute_metrics(
        GOLDEN_Y,
        GOLDEN_S,
        threshold=0.5,
        groups=GOLDEN_GROUPS,
        n_boot=20,
        uncertain_band=0.1,
        min_group_n=5,
    )


def _dump(m: Metrics) -> str:
    """``metrics.json`` as ``write_report`` writes it."""
    return json.dumps(m.to_json_dict(), indent=2, default=str, ensure_ascii=False)


def _assert_same(got: Any, want: Any, where: str = "") -> None:
    """Equal JSON values with the same key order and the same types (1 is not 1.0, null is not
    absent); floats to 1e-9 (the last digit may differ between numerical libraries)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            _assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), where
    else:
        assert got == want, where


def test_json_matches_the_dict_it_replaced() -> None:
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    got = json.loads(_dump(_golden_metrics()))
    _assert_same(got, want)
    assert list(want)[-3:] == ["classification_report_text", "breakdown", "warnings"]
    pooled = want["breakdown"]["group"]["(small groups, n<5 each)"]
    assert pooled["groups"] == ["(missing)", "c", "d"]


def test_json_is_byte_identical_where_the_floats_are() -> None:
    """The text itself, with the floats read back the same, is the golden file's."""
    text = _dump(_golden_metrics())
    golden = GOLDEN.read_text(encoding="utf-8").rstrip("\n")
    if json.loads(text) == json.loads(golden):
        assert text == golden


def test_null_and_absent_keys() -> None:
    one_class = compute_metrics([0] * 12, np.linspace(0, 0.6, 12), n_boot=20)
    d = one_class.to_json_dict()
    assert d["roc_auc"] is None and d["roc_auc_ci"] is None and d["fake_acc"] is None
    assert d["tpr_at_fpr_1"] is None and "tpr_at_fpr_1_ci" in d
    for absent in ("uncertain_band", "n_rows", "n_skipped", "folds", "fold_auc", "fold_accuracy"):
        assert absent not in d, absent
    assert d["breakdown"] == {} and list(d)[-1] == "warnings"
    assert compute_metrics([0, 1], [0.2, 0.7], n_boot=5, uncertain_band=0.0).to_json_dict()[
        "uncertain_band"
    ] == pytest.approx(0.0)


def test_keys_set_by_callers_follow_warnings_in_order() -> None:
    m = _golden_metrics()
    m.n_skipped = 2
    assert list(m.to_json_dict())[-2:] == ["warnings", "n_skipped"]
    m.fold_accuracy = Spread(mean=0.5, std=None)
    m.n_rows = 16
    m.folds = [
        FoldSummary(
            fold=0,
            n=7,
            roc_auc=None,
            roc_auc_ci=None,
            accuracy=1.0,
            accuracy_ci=(1.0, 1.0),
            threshold=0.5,
        )
    ]
    d = m.to_json_dict()
    assert list(d)[-5:] == ["warnings", "n_rows", "n_skipped", "folds", "fold_accuracy"]
    assert d["fold_accuracy"] == {"mean": 0.5, "std": None}
    assert d["folds"][0]["roc_auc"] is None and d["folds"][0]["accuracy_ci"] == [1.0, 1.0]


def test_round_trip(tmp_path: Path) -> None:
    m = _golden_metrics()
    m.n_skipped = 1
    path = tmp_path / "metrics.json"
    path.write_text(_dump(m), encoding="utf-8")
    loaded = Metrics.load(path)
    assert loaded == m
    assert _dump(loaded) == _dump(m)
    assert (
        loaded.breakdown["group"]["a"].accuracy_exact_ci
        == m.breakdown["group"]["a"].accuracy_exact_ci
    )


def test_older_files_load(tmp_path: Path) -> None:
    """Files from before TPR at FPR, ECE and the cells' exact intervals, with a key since
    dropped, still load; what they lack is None (ECE bins: the default 10)."""
    d = _golden_metrics().to_json_dict()
    old = {k: v for k, v in d.items() if not k.startswith(("tpr_at", "ece"))}
    for cells in old["breakdown"].values():
        for cell in cells.values():
            del cell["accuracy_exact_ci"]
    old["reliability"] = [[0.1, 0.2]]
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    m = Metrics.load(path)
    assert m.tpr_at_fpr_1 is None and m.ece is None and m.ece_bins == 10
    assert m.breakdown["group"]["a"].accuracy_exact_ci is None
    assert "reliability" not in m.to_json_dict()  # unknown keys are ignored
    minimal = Metrics.from_json_dict({"n": 2, "n_real": 1, "n_fake": 1, "accuracy": 0.5})
    assert minimal.threshold is None and minimal.warnings == [] and minimal.breakdown == {}


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (
            '{"n": "many", "n_real": 1, "n_fake": 1, "accuracy": 0.5}',
            "key n = 'many': expected int",
        ),
        ('{"n": 2, "n_real": 1, "n_fake": 1, "accuracy": 0.5, "roc_auc_ci": [0.1]}', "roc_auc_ci"),
        ('{"n": 2, "n_real": 1, "n_fake": 1}', "key accuracy"),
        ("[1, 2]", "expected a JSON object of metrics, got list"),
        ("{not json", "not a JSON metrics file"),
    ],
)
def test_wrong_file_is_one_clear_error(tmp_path: Path, content: str, said: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MetricsFileError) as e:
        Metrics.load(path)
    assert str(e.value).startswith(f"{path}: ") and said in str(e.value)
    assert "\n" not in str(e.value)


def test_report_command_names_the_bad_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.json").write_text('{"n": 4, "n_real": 2, "n_fake": 2, "accuracy": "high"}')
    (out / "predictions.csv").write_text("path,label,score,pred\na.png,0,0.1,0\n")
    assert main(["report", str(out)]) != 0
    err = capsys.readouterr().err
    assert f"{out / 'metrics.json'}: key accuracy = 'high': expected float" in err


def test_fields_are_typed_on_assignment() -> None:
    m = _golden_metrics()
    with pytest.raises(pydantic.ValidationError):
        m.n_skipped = "some"  # type: ignore[assignment]
    with pytest.raises(ValueError):
        m.n_skiped = 3  # type: ignore[attr-defined]  # a typo is not a new key


def test_every_fpr_target_is_a_field() -> None:
    for key, _ in FPR_TARGETS:
        assert key in Metrics.model_fields and f"{key}_ci" in Metrics.model_fields
    m = _golden_metrics()
    assert [(t.fpr, t.value, t.ci) for t in m.tprs()] == [
        (0.01, m.tpr_at_fpr_1, m.tpr_at_fpr_1_ci),
        (0.05, m.tpr_at_fpr_5, m.tpr_at_fpr_5_ci),
    ]
