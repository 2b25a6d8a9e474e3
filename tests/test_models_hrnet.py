"""HRNetV2 + OCR (f-BRS): checkpoint layout, forward conformance, insertion sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_fbrs.core.models import registry
from napari_fbrs.core.models.hrnet import (
    HRNetOCRNet,
    ObjectAttentionBlock,
    SpatialOCR,
    build_hrnet_ocr,
    spatial_gather,
)
from napari_fbrs.core.testing import deterministic_fill_

FBRS_ARCHS = {
    "hrnet18_ocr64": {"width": 18, "ocr_width": 64},
    "hrnet32_ocr128": {"width": 32, "ocr_width": 128},
}


def _keys(path: Path, prefix: str = "") -> dict[str, tuple[int, ...]]:
    data = json.loads(path.read_text())
    return {k: tuple(v) for k, v in data.items() if k.startswith(prefix)}


def _shapes(net: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if k.startswith(prefix)}


def _meta_build(**kwargs) -> HRNetOCRNet:
    with torch.device("meta"):  # layout only: no memory, no init cost
        return build_hrnet_ocr(**kwargs)


def _filled(arch: str, conformance_dir: Path) -> tuple[HRNetOCRNet, dict, dict]:
    meta = json.loads((conformance_dir / f"{arch}.meta.json").read_text())
    data = dict(np.load(conformance_dir / f"{arch}.npz"))
    net = build_hrnet_ocr(**FBRS_ARCHS[arch])
    deterministic_fill_(net, meta["fill_gain"])
    return net.eval(), meta, data


@pytest.mark.parametrize("arch", sorted(FBRS_ARCHS))
def test_state_dict_matches_official_keys(arch, conformance_dir):
    want = _keys(conformance_dir / f"{arch}.keys.json")
    assert _shapes(_meta_build(**FBRS_ARCHS[arch])) == want


def test_small_variant_feature_extractor_matches_ritm_18s(conformance_dir):
    prefix = "feature_extractor."
    want = _keys(conformance_dir / "ritm_hrnet18s_itermask.keys.json", prefix)
    # the RITM 18s checkpoint's OCR width is 48 (conv3x3_ocr has 2 * 48 outputs)
    assert want[prefix + "conv3x3_ocr.0.weight"][0] == 96
    spec = registry.ARCHITECTURES["hrnet18s_ocr48"]
    net = _meta_build(**spec.kwargs)
    assert _shapes(net, prefix) == want


def test_registry_layouts_build_and_report_site_channels():
    for name, a_ch, c_ch in [("hrnet18s_ocr48", 270, 96), ("hrnet48_ocr128", 720, 256)]:
        net = _meta_build(**registry.ARCHITECTURES[name].kwargs)
        assert (net.site_channels("A"), net.site_channels("C")) == (a_ch, c_ch)
        assert net.brs_sites == {"f-BRS-A": "A", "f-BRS-B": "A", "f-BRS-C": "C"}
        assert net.input_normalization == "imagenet"


@pytest.mark.parametrize("arch", sorted(FBRS_ARCHS))
def test_forward_matches_reference_logits(arch, conformance_dir):
    net, _, data = _filled(arch, conformance_dir)
    image = torch.from_numpy(data["forward_input"])[None]
    points = torch.from_numpy(data["forward_points"]).float()[None]
    with torch.inference_mode():
        ours = net(image, points)["instances"][0, 0].numpy()
    ref = data["forward_logits"]
    assert ours.shape == ref.shape == (240, 320)
    assert np.all(np.abs(ours - ref) <= 1e-3 * (1 + np.abs(ref)))


@pytest.fixture(scope="module")
def small_net() -> HRNetOCRNet:
    torch.manual_seed(0)
    net = build_hrnet_ocr(18, 48, small=True)
    return deterministic_fill_(net, 1.0).eval()


def _inputs(height: int = 45, width: int = 62) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, height, width, generator=gen)
    points = torch.tensor([[[10.0, 20.0], [30.0, 5.0]], [[40.0, 60.0], [-1.0, -1.0]]])
    return image, points


def test_low_resolution_logits_shape(small_net):
    image, points = _inputs()
    with torch.inference_mode():
        maps = small_net.encode_clicks(image, points)
        low = small_net.logits_from_maps(image, maps)
        full = small_net(image, points)["instances"]
    assert maps.shape == (2, 2, 45, 62)
    assert low.shape == (2, 1, 12, 16)  # stride 4, rounded up by the two stride-2 convs
    assert full.shape == (2, 1, 45, 62)


@pytest.mark.parametrize("site", ["A", "C"])
def test_site_round_trip_equals_full_pass(small_net, site):
    image, points = _inputs()
    with torch.inference_mode():
        maps = small_net.encode_clicks(image, points)
        direct = small_net.logits_from_maps(image, maps)
        feats, ctx = small_net.site_features(site, image, maps)
        before = feats.clone()
        via_site = small_net.logits_from_site(site, feats, ctx)
    torch.testing.assert_close(feats, before, rtol=0, atol=0)  # site features are not written
    assert feats.shape == (2, small_net.site_channels(site), 12, 16)
    torch.testing.assert_close(via_site, direct, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("site", ["A", "C"])
def test_site_finishing_is_differentiable(small_net, site):
    image, points = _inputs()
    maps = small_net.encode_clicks(image, points)
    with torch.inference_mode():
        feats, ctx = small_net.site_features(site, image, maps)
    feats = feats.clone()  # inference tensors cannot enter autograd; the predictor copies once
    scale = torch.ones(1, feats.shape[1], 1, 1, requires_grad=True)
    bias = torch.zeros(1, feats.shape[1], 1, 1, requires_grad=True)
    small_net.logits_from_site(site, feats * scale + bias, ctx).sum().backward()
    assert scale.grad is not None and bias.grad is not None
    assert torch.isfinite(scale.grad).all() and bias.grad.abs().sum() > 0


def test_backward_through_whole_network(small_net):
    # RGB-BRS / DistMap-BRS differentiate w.r.t. the input: in-place ops must be safe
    image, points = _inputs()
    maps = small_net.encode_clicks(image, points).requires_grad_(True)
    small_net.logits_from_maps(image, maps).sum().backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()
    assert maps.grad.abs().sum() > 0


def test_unknown_site_is_refused(small_net):
    image, points = _inputs()
    with pytest.raises(ValueError, match="sites 'A' and 'C'"):
        small_net.site_features("B", image, small_net.encode_clicks(image, points))
    with pytest.raises(ValueError, match="not 'Z'"):
        small_net.site_channels("Z")


def test_spatial_gather_is_softmax_weighted_mean():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 5, 3, 4, generator=gen)
    probs = torch.randn(2, 2, 3, 4, generator=gen)
    out = spatial_gather(feats, probs)
    weights = torch.softmax(probs.flatten(2), dim=2)
    want = torch.einsum("bkp,bcp->bck", weights, feats.flatten(2))[..., None]
    assert out.shape == (2, 5, 2, 1)
    torch.testing.assert_close(out, want)


@pytest.mark.parametrize("module", [ObjectAttentionBlock(16, 8), SpatialOCR(16, 8, 12)])
def test_single_region_shortcut_is_exact(module):
    # two identical object regions take the general attention path with the same result
    torch.manual_seed(3)
    module = deterministic_fill_(module, 1.0).eval()
    x = torch.randn(2, 16, 5, 7)
    proxy = torch.randn(2, 16, 1, 1)
    with torch.inference_mode():
        fast = module(x, proxy)
        general = module(x, torch.cat([proxy, proxy], dim=2))
    assert general.shape[2:] == (5, 7)
    torch.testing.assert_close(fast.expand_as(general), general, rtol=1e-5, atol=1e-5)


def test_checkpoint_is_identified_and_loaded(tmp_path):
    net = deterministic_fill_(build_hrnet_ocr(18, 64), 0.8).eval()
    path = tmp_path / "hrnet18_ocr64_sbd.pth"
    # the official files hold the weights under "state_dict"
    torch.save({"state_dict": net.state_dict(), "config": {}}, path)
    state_dict, _ = registry.load_state_dict_file(path)
    assert registry.identify_architecture(state_dict) == "hrnet18_ocr64"
    loaded = registry.load_model(path, device="cpu")
    assert isinstance(loaded, HRNetOCRNet) and not loaded.training
    image, points = _inputs(33, 40)
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded(image, points)["instances"], net(image, points)["instances"]
        )
