"""The predictor reproduces the reference RITM predictor on the ``ritm_*`` fixtures.

Bounds from ``shared/conformance/README.md``: per click, the masks at 0.49 agree with
IoU >= 0.98 and the mean absolute probability difference is <= 0.01. The fixtures were made
with the RITM release's predictor (previous prediction fed back as the fourth input channel,
clicks as disks of radius 5) and the settings the README lists, which are the predictor's
defaults here.

Ill-conditioned clicks
----------------------
As for the f-BRS fixtures (see ``test_conformance_predictor.py``), a few L-BFGS-B paths are
chaotic under the fixtures' random weights. For ``ritm_hrnet32_itermask`` with f-BRS-A
and f-BRS-B (the same site "A" on HRNet), click 2 runs 17 objective evaluations, along which
rounding noise grows from the 6th digit of the loss at the 3rd evaluation to ~1% of the
variables at the 16th. Survey (CPU, site features multiplied by ``1 + eps * N(0, 1)``):
with eps = 1e-6, smaller than the 1e-5 relative difference between our forward logits and
the fixture's on this network, click 2 conforms in every run, click 3 (warm-started from
click 2, 3 evaluations) lands between IoU 0.86 and 0.99 (one run of four matches the
fixture) and click 4 between 0.81 and 0.98; with eps = 1e-7, or one vs two torch threads,
click 4 still moves (0.956 to 0.976). :data:`ILL_CONDITIONED` records the first such
click; every click before it must conform, later ones are compared and reported as an
expected failure with their numbers when they miss.

Heavy cases
-----------
The default run covers every mode on ``ritm_hrnet18_itermask`` and NoBRS plus the f-BRS modes
on the other HRNet-18 models. RGB-BRS and DistMap-BRS on those (a whole network pass per
objective evaluation, up to 21 per click) and all of ``ritm_hrnet32_itermask`` are marked
``slow`` (``pytest -m slow``).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_fbrs.core.image import to_unit_rgb
from napari_fbrs.core.testing import (
    fixture_agreement,
    fixture_net,
    load_fixture,
    reference_predictor,
)

torch = pytest.importorskip("torch")

MODES = ["NoBRS", "f-BRS-A", "f-BRS-B", "f-BRS-C", "RGB-BRS", "DistMap-BRS"]
ARCHS = [
    "ritm_hrnet18_itermask",
    "ritm_hrnet18_baseline",
    "ritm_hrnet18s_itermask",
    "ritm_hrnet32_itermask",
]
#: the only cases of the default run outside ``ritm_hrnet18_itermask``
_FAST_MODES = ("NoBRS", "f-BRS-A", "f-BRS-B", "f-BRS-C")

#: (arch, mode) -> 1-based index of the first click whose result is not reproducible
#: across float32 rounding (see the module docstring).
ILL_CONDITIONED: dict[tuple[str, str], int] = {
    ("ritm_hrnet32_itermask", "f-BRS-A"): 3,
    ("ritm_hrnet32_itermask", "f-BRS-B"): 3,
}

IOU_MIN = 0.98
MAD_MAX = 0.01


def _is_slow(arch: str, mode: str) -> bool:
    if arch == "ritm_hrnet18_itermask":
        return False
    return arch == "ritm_hrnet32_itermask" or mode not in _FAST_MODES


def _cases():
    for arch in ARCHS:  # grouped by arch: one network is built per arch
        for mode in MODES:
            marks = [pytest.mark.slow] if _is_slow(arch, mode) else []
            yield pytest.param(arch, mode, id=f"{arch}-{mode}", marks=marks)


_NETS: dict[str, object] = {}


def _net(arch, fill_gain):
    if arch not in _NETS:
        _NETS.clear()  # keep one network in memory at a time
        _NETS[arch] = fixture_net(arch, fill_gain)
    return _NETS[arch]


@pytest.mark.parametrize("arch", ["ritm_hrnet18_itermask", "ritm_hrnet18_baseline"])
def test_unit_image_matches_fixture_input(conformance_dir, arch):
    # RITM networks get the [0, 1] image (ImageNet normalisation is applied on top of it);
    # IT-M models see an all-zero previous mask before the first click
    _, ref, image = load_fixture(conformance_dir, arch)
    x = ref["forward_input"]
    np.testing.assert_allclose(to_unit_rgb(image), x[:3], atol=1e-6)
    assert x.shape[0] == (4 if arch.endswith("itermask") else 3)
    assert np.all(x[3:] == 0)


@pytest.mark.parametrize(("arch", "mode"), list(_cases()))
def test_modes_reproduce_reference(conformance_dir, arch, mode):
    meta, ref, image = load_fixture(conformance_dir, arch)
    net = _net(arch, meta["fill_gain"])
    p = reference_predictor(net, mode)
    p.set_image(image)
    expected = ref[f"{mode}_probs"].astype(np.float32)
    first_chaotic = ILL_CONDITIONED.get((arch, mode), len(expected) + 1)
    misses = []
    for i, (is_pos, y, x) in enumerate(meta["modes"][mode]["clicks"]):
        prob = p.add_click(y, x, positive=bool(is_pos))
        assert prob.shape == expected[i].shape and prob.dtype == np.float32
        iou, mad = fixture_agreement(prob, expected[i])
        if iou >= IOU_MIN and mad <= MAD_MAX:
            continue
        msg = f"click {i + 1}: IoU {iou:.4f}, mean |diff| {mad:.4f}"
        assert i + 1 >= first_chaotic, msg
        misses.append(msg)
    if misses:
        pytest.xfail(
            f"ill-conditioned from click {first_chaotic} (L-BFGS path depends on "
            f"float32 rounding): {'; '.join(misses)}"
        )
