"""NoC metrics from IoU curves, and the report built on them: JSON, markdown table, plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_fbrs.core.evaluation.metrics import (
    iou,
    miou_curve,
    noc,
    over_max,
    reached,
    summarize,
    threshold_key,
)
from napari_fbrs.core.evaluation.report import (
    build_report,
    dumps_report,
    markdown_table,
    plot_miou,
    read_report,
    write_report,
)
from napari_fbrs.core.evaluation.runner import DatasetResult, ObjectResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def first_reaching(curve, threshold, max_clicks):
    """Reference NoC: 1-based click of the first IoU >= threshold, else max_clicks."""
    hits = [k + 1 for k, v in enumerate(curve[:max_clicks]) if v >= threshold]
    return hits[0] if hits else max_clicks


# ------------------------------------------------------------------------------ metrics
def test_iou_basic_and_ignored_pixels():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    pred = np.zeros_like(gt)
    pred[:2, :3] = True
    assert iou(pred, gt) == pytest.approx(4 / 6)
    ignore = np.zeros_like(gt)
    ignore[:, 2] = True
    assert iou(pred, gt, ignore) == 1.0
    assert iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    with pytest.raises(ValueError, match="differs"):
        iou(pred, gt[:3])


def test_noc_thresholds_and_budget():
    curve = [0.5, 0.8, 0.84, 0.85, 0.9]
    assert [noc(curve, t) for t in (0.8, 0.85, 0.9)] == [2, 4, 5]
    assert noc([0.1, 0.2], 0.9, max_clicks=20) == 20
    # only the first max_clicks IoUs count
    assert noc([0.1, 0.2, 0.95], 0.9, max_clicks=2) == 2
    assert not reached([0.1, 0.2, 0.95], 0.9, max_clicks=2)


def test_reaching_the_target_on_the_last_click_is_not_over_max():
    at_last = [0.1] * 19 + [0.91]
    never = [0.1] * 20
    assert noc(at_last, 0.9, 20) == 20 and noc(never, 0.9, 20) == 20
    assert over_max([at_last, never], 0.9, 20) == 1
    assert over_max([at_last, never], 0.85, 20) == 1


def test_miou_carries_the_last_iou_forward():
    curves = [[0.5, 0.9], [0.2, 0.4, 0.6, 0.8], []]
    np.testing.assert_allclose(
        miou_curve(curves, max_clicks=5),
        [(0.5 + 0.2) / 3, (0.9 + 0.4) / 3, (0.9 + 0.6) / 3, (0.9 + 0.8) / 3, (0.9 + 0.8) / 3],
    )
    assert np.isnan(miou_curve([], 3)).all() and miou_curve([], 3).shape == (3,)


def test_summarize_matches_a_reference_computation():
    rng = np.random.default_rng(0)
    curves = [list(np.sort(rng.random(rng.integers(1, 21)))) for _ in range(30)]
    summary = summarize(curves, max_clicks=20)
    for t in (0.8, 0.85, 0.9):
        expected = np.mean([first_reaching(c, t, 20) for c in curves])
        assert summary["noc"][threshold_key(t)] == pytest.approx(expected)
    for t in (0.85, 0.9):
        expected = sum(not any(v >= t for v in c) for c in curves)
        assert summary["over_max"][threshold_key(t)] == expected
    empty = summarize([], 20)
    assert all(math.isnan(v) for v in empty["noc"].values())
    assert empty["over_max"] == {"85": 0, "90": 0}


# ------------------------------------------------------------------------------ report
def result(dataset, mode, curves, seconds=0.5):
    r = DatasetResult(dataset, mode, max_clicks=20, target_iou=0.9)
    for i, curve in enumerate(curves):
        clicks = [(i, k, k % 2 == 0) for k in range(len(curve))]
        r.objects.append(ObjectResult(f"{dataset}{i}", list(curve), clicks, seconds))
    return r


CURVES_A = [[0.95], [0.5, 0.82, 0.87, 0.93], [0.1] * 20, [0.3, 0.86, 0.86, 0.86, 0.91]]
CURVES_B = [[0.91], [0.7, 0.9]]


def test_report_single_mode_has_the_issue_shape():
    report = build_report("net.pt", [result("GrabCut", "NoBRS", CURVES_A)])
    assert report["model"] == "net.pt"
    assert list(report["datasets"]) == ["GrabCut"]
    entry = report["datasets"]["GrabCut"]
    assert entry["mode"] == "NoBRS"
    assert entry["noc"] == {
        "80": pytest.approx((1 + 2 + 20 + 2) / 4),
        "85": pytest.approx((1 + 3 + 20 + 2) / 4),
        "90": pytest.approx((1 + 4 + 20 + 5) / 4),
    }
    assert entry["over_max"] == {"85": 1, "90": 1}
    clicks = 1 + 4 + 20 + 5
    assert entry["spc"] == pytest.approx(4 * 0.5 / clicks)
    assert [o["name"] for o in entry["per_image"]] == [
        "GrabCut0",
        "GrabCut1",
        "GrabCut2",
        "GrabCut3",
    ]
    assert entry["per_image"][1]["ious"] == CURVES_A[1]
    # mIoU after k clicks, each curve's last IoU carried forward
    assert len(entry["miou"]) == 20
    assert entry["miou"][0] == pytest.approx((0.95 + 0.5 + 0.1 + 0.3) / 4)
    assert entry["miou"][4] == pytest.approx((0.95 + 0.93 + 0.1 + 0.91) / 4)
    assert entry["miou"][19] == entry["miou"][4]


def test_report_with_several_modes_keys_datasets_by_mode():
    report = build_report(
        "m",
        [
            result("GrabCut", "NoBRS", CURVES_A),
            result("GrabCut", "f-BRS-B", CURVES_B),
            result("nuclei2d", "NoBRS", CURVES_B),
        ],
    )
    assert list(report["datasets"]) == ["GrabCut/NoBRS", "GrabCut/f-BRS-B", "nuclei2d/NoBRS"]
    assert report["datasets"]["GrabCut/f-BRS-B"]["noc"]["90"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="twice"):
        build_report(
            "m", [result("G", "NoBRS", CURVES_B), result("G", "NoBRS", CURVES_A)], key_by_mode=False
        )
    with pytest.raises(ValueError, match="no results"):
        build_report("m", [])


def test_json_round_trip_and_noc_equal_to_the_stored_curves(tmp_path):
    curves = [[0.123456789, 0.8500000001], [0.89999999, 0.9000004]]
    report = build_report("m", [result("D", "NoBRS", curves)])
    paths = write_report(report, tmp_path / "out", plot=False)
    assert set(paths) == {"json", "markdown"} and not (tmp_path / "out" / "miou.png").exists()
    loaded = read_report(paths["json"])
    assert loaded == json.loads(dumps_report(report))
    entry = loaded["datasets"]["D"]
    stored = [o["ious"] for o in entry["per_image"]]
    assert stored == [[0.123457, 0.85], [0.9, 0.9]]
    for t in (0.8, 0.85, 0.9):
        expected = np.mean([first_reaching(c, t, 20) for c in stored])
        assert entry["noc"][threshold_key(t)] == pytest.approx(expected)


def test_json_has_no_nan_and_one_line_per_object():
    empty = DatasetResult("E", "NoBRS", 20, 0.9)
    report = build_report("m", [empty, result("D", "NoBRS", CURVES_B)])
    text = dumps_report(report)
    assert "NaN" not in text
    loaded = json.loads(text)
    assert loaded["datasets"]["E"]["noc"] == {"80": None, "85": None, "90": None}
    assert loaded["datasets"]["E"]["spc"] is None
    assert loaded["datasets"]["E"]["miou"] == [None] * 20
    lines = [line for line in text.splitlines() if '"name": "D' in line]
    assert len(lines) == 2


def test_markdown_table_columns_and_rows():
    report = build_report(
        "net.pt", [result("GrabCut", "NoBRS", CURVES_A), result("GrabCut", "f-BRS-B", CURVES_B)]
    )
    table = markdown_table(report)
    lines = table.strip().splitlines()
    assert lines[0] == "Model: `net.pt`"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == [
        "Dataset",
        "Mode",
        "Objects",
        "NoC@80",
        "NoC@85",
        "NoC@90",
        "≥20@85",
        "≥20@90",
        "SPC, s",
    ]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:]]
    assert rows[0][:8] == ["GrabCut", "NoBRS", "4", "6.25", "6.50", "7.50", "1", "1"]
    assert rows[1][:8] == ["GrabCut", "f-BRS-B", "2", "1.50", "1.50", "1.50", "0", "0"]
    assert float(rows[0][8]) == pytest.approx(2 / 30, abs=1e-3)


def test_plot_is_a_png(tmp_path):
    report = build_report(
        "m", [result("GrabCut", "NoBRS", CURVES_A), result("GrabCut", "f-BRS-B", CURVES_B)]
    )
    path = plot_miou(report, tmp_path / "miou.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    paths = write_report(report, tmp_path / "out")
    assert paths["plot"].read_bytes().startswith(PNG_SIGNATURE)
