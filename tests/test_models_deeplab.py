"""f-BRS DeepLabV3+ networks: checkpoint layout, conformance, f-BRS sites, registry loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_fbrs.core.models.deeplab import DeepLabNet
from napari_fbrs.core.models.registry import (
    CheckpointError,
    build_model,
    identify_architecture,
    load_model,
)
from napari_fbrs.core.testing import deterministic_fill_, deterministic_state_dict

ARCHS = ["resnet34_dh128", "resnet50_dh128", "resnet101_dh256"]
ARCH_PARAMS = [
    pytest.param(a, marks=pytest.mark.slow) if a == "resnet101_dh256" else a for a in ARCHS
]
# (backbone channels, head channels) per architecture
CHANNELS = {
    "resnet34_dh128": (512, 128),
    "resnet50_dh128": (2048, 128),
    "resnet101_dh256": (2048, 256),
}


def _fixture(conformance_dir: Path, arch: str) -> tuple[dict, dict, dict]:
    keys = json.loads((conformance_dir / f"{arch}.keys.json").read_text())
    meta = json.loads((conformance_dir / f"{arch}.meta.json").read_text())
    with np.load(conformance_dir / f"{arch}.npz") as npz:
        data = {k: npz[k] for k in ("forward_input", "forward_points", "forward_logits")}
    return keys, meta, data


@pytest.fixture(scope="module")
def small_net() -> DeepLabNet:
    """A filled ResNet-34 net (the smallest), shared by the cheap tests."""
    return deterministic_fill_(build_model("resnet34_dh128"), 1.7).eval()


def _inputs(h: int = 48, w: int = 72) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, h, w, generator=g)
    points = torch.tensor([[[10.0, 20.0], [30.0, 50.0], [5.0, 60.0], [-1.0, -1.0]]])
    return image, points


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_layout_matches_official(conformance_dir: Path, arch: str) -> None:
    keys, _, _ = _fixture(conformance_dir, arch)
    with torch.device("meta"):  # shapes only: no memory, no init
        net = build_model(arch)
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert sorted(set(keys) - set(got)) == []
    assert sorted(set(got) - set(keys)) == []
    assert got == keys


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_forward_conforms_to_reference(conformance_dir: Path, arch: str) -> None:
    _, meta, data = _fixture(conformance_dir, arch)
    net = deterministic_fill_(build_model(arch), meta["fill_gain"]).eval()
    image = torch.from_numpy(data["forward_input"])[None]
    points = torch.from_numpy(data["forward_points"])[None]
    with torch.inference_mode():
        out = net(image, points)["instances"]
    assert out.shape == (1, 1, *image.shape[2:])
    ours = out[0, 0].numpy()
    ref = data["forward_logits"]
    assert np.all(np.abs(ours - ref) <= 1e-3 * (1 + np.abs(ref)))


@pytest.mark.parametrize("arch", ARCHS)
def test_site_channels_and_builder_attributes(arch: str) -> None:
    with torch.device("meta"):
        net = build_model(arch)
    c4, ch = CHANNELS[arch]
    assert isinstance(net, DeepLabNet)
    assert net.arch_name == arch
    assert net.input_normalization == "imagenet"
    assert not net.training
    assert [net.site_channels(s) for s in "ABC"] == [c4, ch + 32, ch]


def test_low_res_logits_shape_and_site_shapes(small_net: DeepLabNet) -> None:
    image, points = _inputs(50, 70)  # not multiples of 8: the stride-4 map is rounded up
    maps = small_net.encode_clicks(image, points)
    assert maps.shape == (1, 2, 50, 70) and maps.dtype == torch.float32
    with torch.inference_mode():
        low = small_net.logits_from_maps(image, maps)
        assert low.shape == (1, 1, 13, 18)
        expected = {"A": (1, 512, 7, 9), "B": (1, 160, 13, 18), "C": (1, 128, 13, 18)}
        for site, shape in expected.items():
            feats, _ = small_net.site_features(site, image, maps)
            assert tuple(feats.shape) == shape
            assert feats.shape[1] == small_net.site_channels(site)


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_site_round_trip_equals_full_pass(small_net: DeepLabNet, site: str) -> None:
    image, points = _inputs()
    with torch.inference_mode():
        maps = small_net.encode_clicks(image, points)
        full = small_net.logits_from_maps(image, maps)
        via_site = small_net.logits_from_site(site, *small_net.site_features(site, image, maps))
    torch.testing.assert_close(via_site, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_site_is_differentiable_wrt_features(small_net: DeepLabNet, site: str) -> None:
    image, points = _inputs()
    with torch.no_grad():
        maps = small_net.encode_clicks(image, points)
        feats, ctx = small_net.site_features(site, image, maps)
    n = small_net.site_channels(site)
    scale = torch.ones(1, n, 1, 1, requires_grad=True)
    bias = torch.zeros(1, n, 1, 1, requires_grad=True)
    logits = small_net.logits_from_site(site, feats * scale + bias, ctx)
    logits.sum().backward()
    assert scale.grad is not None and bias.grad is not None
    assert torch.isfinite(scale.grad).all() and bias.grad.abs().sum() > 0
    # the features themselves were not modified in place by the finishing pass
    with torch.no_grad():
        again, _ = small_net.site_features(site, image, maps)
    torch.testing.assert_close(feats, again)


def test_three_column_points_give_same_maps(small_net: DeepLabNet) -> None:
    image, points = _inputs()
    indexed = torch.cat([points, torch.tensor([[[0.0], [1.0], [2.0], [-1.0]]])], dim=2)
    torch.testing.assert_close(
        small_net.encode_clicks(image, indexed), small_net.encode_clicks(image, points)
    )


def test_unknown_site_raises(small_net: DeepLabNet) -> None:
    with pytest.raises(ValueError, match="unknown f-BRS site 'D'"):
        small_net.site_channels("D")
    image, points = _inputs()
    with pytest.raises(ValueError, match="unknown f-BRS site"):
        small_net.site_features("D", image, small_net.encode_clicks(image, points))


def test_unknown_backbone_raises() -> None:
    from napari_fbrs.core.models.deeplab import build_deeplab

    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        build_deeplab(backbone="resnet18", head_channels=128)


def test_registry_round_trip(tmp_path: Path, small_net: DeepLabNet) -> None:
    state = deterministic_state_dict(small_net.state_dict(), 1.7)
    path = tmp_path / "resnet34.pth"
    torch.save({"state_dict": state}, path)
    assert identify_architecture(state) == "resnet34_dh128"

    net = load_model(path, device="cpu")
    assert isinstance(net, DeepLabNet) and net.arch_name == "resnet34_dh128"
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    image, points = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(
            net(image, points)["instances"], small_net(image, points)["instances"], rtol=0, atol=0
        )


def test_missing_key_names_closest_architecture(small_net: DeepLabNet) -> None:
    state = dict(small_net.state_dict())
    removed = "feature_extractor.aspp.project.0.weight"
    del state[removed]
    with pytest.raises(CheckpointError) as info:
        identify_architecture(state)
    message = str(info.value)
    assert "'resnet34_dh128'" in message
    assert removed in message
