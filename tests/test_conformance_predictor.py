"""The predictor reproduces the reference f-BRS predictor on the conformance fixtures.

Bounds from ``shared/conformance/README.md``: per click, the masks at 0.49 agree with
IoU >= 0.98 and the mean absolute probability difference is <= 0.01.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_fbrs as nf
from napari_fbrs.core.image import network_input, to_unit_rgb
from napari_fbrs.core.testing import deterministic_fill_

torch = pytest.importorskip("torch")

FBRS_ARCHS = ["resnet34_dh128", "resnet50_dh128", "hrnet18_ocr64", "hrnet32_ocr128",
              pytest.param("resnet101_dh256", marks=pytest.mark.slow)]


def _load(conformance_dir, arch):
    from skimage.io import imread

    meta = json.loads((conformance_dir / f"{arch}.meta.json").read_text())
    ref = np.load(conformance_dir / f"{arch}.npz")
    image = imread(conformance_dir / "input.png")
    return meta, ref, image


_NETS: dict[str, object] = {}


def _net(arch, fill_gain):
    if arch not in _NETS:
        _NETS.clear()  # keep one big network in memory at a time
        _NETS[arch] = deterministic_fill_(nf.build_model(arch), fill_gain).eval()
    return _NETS[arch]


def test_image_normalisation_matches_fixture_input(conformance_dir):
    meta, ref, image = _load(conformance_dir, "resnet34_dh128")
    ours = network_input(to_unit_rgb(image), "imagenet")[0].numpy()
    np.testing.assert_allclose(ours, ref["forward_input"], atol=1e-5)


@pytest.mark.parametrize("mode", ["NoBRS", "f-BRS-A", "f-BRS-B", "f-BRS-C", "RGB-BRS",
                                  "DistMap-BRS"])
@pytest.mark.parametrize("arch", FBRS_ARCHS)
def test_modes_reproduce_reference(conformance_dir, arch, mode):
    meta, ref, image = _load(conformance_dir, arch)
    net = _net(arch, meta["fill_gain"])
    p = nf.Predictor(net, mode=mode, device="cpu", with_flip=True,
                     zoom_in=nf.ZoomIn(target_size=400, skip_clicks=1, expansion_ratio=1.4,
                                       min_crop_size=200, recompute_iou=0.5),
                     prob_thresh=0.49, lbfgs_maxfun=20)
    p.set_image(image)
    expected = ref[f"{mode}_probs"].astype(np.float32)
    for i, (is_pos, y, x) in enumerate(meta["modes"][mode]["clicks"]):
        prob = p.add_click(y, x, positive=bool(is_pos))
        assert prob.shape == expected[i].shape and prob.dtype == np.float32
        ours_mask, ref_mask = prob >= 0.49, expected[i] >= 0.49
        union = np.logical_or(ours_mask, ref_mask).sum()
        iou = np.logical_and(ours_mask, ref_mask).sum() / union if union else 1.0
        mad = float(np.abs(prob - expected[i]).mean())
        assert iou >= 0.98 and mad <= 0.01, f"click {i + 1}: IoU {iou:.4f}, mean |diff| {mad:.4f}"
