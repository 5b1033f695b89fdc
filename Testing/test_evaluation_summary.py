"""Held-out evaluation summary: sensitivity by slice thickness, and its model-card row."""

from medcert.training.evaluate import SLICE_BANDS, slice_band, summarize
from medcert.training.model_card import _held_out_rows


def _scan(seed: int, slice_mm: float | None, nodules: list[tuple[float, bool]]) -> dict:
    scan = {"seed": seed, "dice_right": 0.98, "dice_left": 0.97, "lr_swap": False, "fp": 0, "fp_sized": 0,
            "inference_s": 10.0,
            "nodules": [{"diameter_mm": d, "kind": "solid", "detected": hit} for d, hit in nodules]}
    if slice_mm is not None:
        scan["slice_mm"] = slice_mm
    return scan


def test_slice_bands_cover_every_thickness_at_their_bounds():
    assert [slice_band(t) for t in (0.625, 2.5, 2.51, 5.0, 7.5, 10.0)] == \
        ["<= 2.5 mm", "<= 2.5 mm", "2.5-5 mm", "2.5-5 mm", "> 5 mm", "> 5 mm"]
    assert [label for _, label in SLICE_BANDS] == ["<= 2.5 mm", "2.5-5 mm", "> 5 mm"]


def test_sensitivity_by_slice_counts_each_nodule_of_6_mm_or_more_once():
    scans = [_scan(1, 1.0, [(8.0, True), (12.0, False), (4.0, True)]),
             _scan(2, 5.0, [(6.0, True)]),
             _scan(3, 10.0, [(7.0, False), (20.0, True)]),
             _scan(4, 2.0, [])]
    s = summarize(scans)
    assert s["sensitivity_by_slice_ge6mm"] == {"<= 2.5 mm": [1, 2], "2.5-5 mm": [1, 1], "> 5 mm": [1, 2]}
    bands = s["sensitivity_by_slice_ge6mm"].values()
    assert sum(b[0] for b in bands) == s["detected_ge6mm"] and sum(b[1] for b in bands) == s["nodules_ge6mm"]
    row = [r for r in _held_out_rows(s) if "by slice thickness" in r]
    assert row == ["| — by slice thickness (detected/total) | <= 2.5 mm 1/2, 2.5-5 mm 1/1, > 5 mm 1/2 |"]


def test_results_recorded_without_slice_thickness_get_no_breakdown():
    s = summarize([_scan(1, None, [(8.0, True)]), _scan(2, 3.0, [(9.0, False)])])
    assert "sensitivity_by_slice_ge6mm" not in s and s["detected_ge6mm"] == 1
    assert not any("by slice thickness" in r for r in _held_out_rows(s))
