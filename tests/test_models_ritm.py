"""RITM HRNet + OCR: checkpoint layouts, forward conformance, clicks, config reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_fbrs as nf
from napari_fbrs.core import zoo
from napari_fbrs.core.image import IMAGENET_MEAN, IMAGENET_STD
from napari_fbrs.core.models import registry
from napari_fbrs.core.models.ritm import RITMHRNetNet, build_ritm_hrnet, disk_maps
from napari_fbrs.core.models.ritm_config import (
    RITMConfigError,
    RITMModelConfig,
    build_from_checkpoint,
    load_ritm_model,
    parse_ritm_config,
)
from napari_fbrs.core.testing import deterministic_fill_

RITM_ARCHS = [
    "ritm_hrnet18_itermask",
    "ritm_hrnet18s_itermask",
    "ritm_hrnet32_itermask",
    "ritm_hrnet18_baseline",
]
HRNET_MODEL = "isegm.model.is_hrnet_model.HRNetModel"


def _keys(path: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads(path.read_text()).items()}


def _meta_build(arch: str) -> RITMHRNetNet:
    with torch.device("meta"):  # layout only: no memory, no init cost
        return nf.build_model(arch)


def _official_config(**overrides) -> dict:
    """A config in the RITM release format: every constructor argument, as data."""
    values = {
        "width": 18,
        "ocr_width": 48,
        "small": True,
        "backbone_lr_mult": 0.1,
        "norm_layer": "torch.nn.modules.batchnorm.BatchNorm2d",
        "use_rgb_conv": False,
        "with_aux_output": True,
        "norm_radius": 5,
        "use_disks": True,
        "cpu_dist_maps": False,
        "clicks_groups": None,
        "with_prev_mask": True,
        "use_leaky_relu": True,
        "binary_prev_mask": False,
        "conv_extend": False,
        "norm_mean_std": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    }
    values.update(overrides)
    specified = {
        "width",
        "ocr_width",
        "small",
        "use_rgb_conv",
        "with_aux_output",
        "norm_radius",
        "use_disks",
        "with_prev_mask",
        "use_leaky_relu",
    }
    return {
        "class": HRNET_MODEL,
        "params": {
            k: {
                "type": "class" if k == "norm_layer" else "builtin",
                "value": v,
                "specified": k in specified,
            }
            for k, v in values.items()
        },
    }


@pytest.fixture(scope="module")
def small_net() -> RITMHRNetNet:
    net = build_ritm_hrnet(18, 48, small=True)
    return deterministic_fill_(net, 1.2).eval()


def _inputs(height: int = 45, width: int = 62):
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, height, width, generator=gen)
    points = torch.tensor(
        [[[10.0, 20.0, 0.0], [30.0, 5.0, 1.0]], [[40.0, 60.0, 0.0], [-1.0, -1.0, -1.0]]]
    )
    prev = torch.rand(2, 1, height, width, generator=gen)
    return image, points, prev


# -- layouts and forward conformance -------------------------------------------------------
@pytest.mark.parametrize("arch", RITM_ARCHS)
def test_state_dict_matches_official_keys(arch, conformance_dir):
    want = _keys(conformance_dir / f"{arch}.keys.json")
    got = {k: tuple(v.shape) for k, v in _meta_build(arch).state_dict().items()}
    assert got == want


@pytest.mark.parametrize("arch", RITM_ARCHS)
def test_official_layout_is_identified(arch, conformance_dir):
    shapes = _keys(conformance_dir / f"{arch}.keys.json")
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert registry.identify_architecture(fake) == arch


@pytest.mark.parametrize(
    "arch",
    [
        "ritm_hrnet18_itermask",
        "ritm_hrnet18_baseline",
        "ritm_hrnet18s_itermask",
        "ritm_hrnet32_itermask",
    ],
)
def test_forward_matches_reference_logits(arch, conformance_dir):
    meta = json.loads((conformance_dir / f"{arch}.meta.json").read_text())
    data = np.load(conformance_dir / f"{arch}.npz")
    net = deterministic_fill_(nf.build_model(arch), meta["fill_gain"]).eval()
    x = torch.from_numpy(data["forward_input"])[None]  # [0, 1] image (+ previous mask)
    points = torch.from_numpy(data["forward_points"]).float()[None]
    assert x.shape[1] == (4 if net.uses_prev_mask else 3)
    with torch.inference_mode():
        ours = net.forward_unit(x, points)["instances"][0, 0].numpy()
    ref = data["forward_logits"]
    assert ours.shape == ref.shape == (240, 320)
    assert np.all(np.abs(ours - ref) <= 1e-3 * (1 + np.abs(ref)))


# -- click encoding ------------------------------------------------------------------------
def test_disks_have_radius_five_and_ignore_padding():
    points = torch.tensor(
        [[[10.0, 12.0, 0.0], [-1.0, -1.0, -1.0], [3.0, 30.0, 1.0], [-1.0, -1.0, -1.0]]]
    )
    maps = disk_maps(points, 20, 40, 5.0)
    assert maps.shape == (1, 2, 20, 40) and maps.dtype == torch.float32
    pos, neg = maps[0]
    assert pos[10, 17] == 1 and pos[15, 12] == 1 and pos[13, 16] == 1  # d^2 = 25
    assert pos[10, 18] == 0 and pos[14, 16] == 0  # d^2 = 36, 32
    assert int(pos.sum()) == 81  # lattice points within radius 5
    assert neg[0, 30] == 1 and neg[8, 30] == 1 and neg[9, 30] == 0
    assert not torch.any(pos * neg)  # padding rows (-1) draw nothing


def test_subpixel_clicks_use_the_exact_distance():
    maps = disk_maps(torch.tensor([[[10.5, 10.0], [-1.0, -1.0]]]), 21, 21, 5.0)
    # (15 - 10.5)^2 = 20.25 <= 25; (16 - 10.5)^2 = 30.25 > 25
    assert maps[0, 0, 15, 10] == 1 and maps[0, 0, 16, 10] == 0 and maps[0, 0, 5, 10] == 0


def test_itermask_maps_are_prev_mask_then_clicks(small_net):
    image, points, prev = _inputs()
    maps = small_net.encode_clicks(image, points, prev)
    assert maps.shape == (2, 3, 45, 62)
    torch.testing.assert_close(maps[:, :1], prev)
    torch.testing.assert_close(maps[:, 1:], disk_maps(points, 45, 62, 5.0))
    no_prev = small_net.encode_clicks(image, points, None)
    assert torch.all(no_prev[:, 0] == 0)
    with pytest.raises(ValueError, match="prev_mask must be"):
        small_net.encode_clicks(image, points, prev[:, :, :10])


def test_baseline_has_only_click_maps():
    net = nf.build_model("ritm_hrnet18_baseline")
    assert not net.uses_prev_mask
    image, points, prev = _inputs()
    maps = net.encode_clicks(image, points[..., :2], prev)  # 2-column points work too
    assert maps.shape == (2, 2, 45, 62)


def test_binary_prev_mask_option_thresholds():
    net = build_ritm_hrnet(18, 48, small=True, binary_prev_mask=True)
    image, points, prev = _inputs()
    maps = net.encode_clicks(image, points, prev)
    torch.testing.assert_close(maps[:, 0:1], (prev > 0.5).float())


# -- passes and sites ----------------------------------------------------------------------
def test_shapes_and_forward_unit_normalises(small_net):
    image, points, prev = _inputs()
    with torch.inference_mode():
        maps = small_net.encode_clicks(image, points, prev)
        low = small_net.logits_from_maps(image, maps)
        full = small_net(image, points, prev)["instances"]
        unit = torch.rand(2, 3, 45, 62)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        via_unit = small_net.forward_unit(torch.cat([unit, prev], 1), points)["instances"]
        direct = small_net((unit - mean) / std, points, prev)["instances"]
    assert low.shape == (2, 1, 12, 16) and full.shape == (2, 1, 45, 62)
    torch.testing.assert_close(via_unit, direct)


@pytest.mark.parametrize("site", ["A", "C"])
def test_site_round_trip_equals_full_pass(small_net, site):
    image, points, prev = _inputs()
    with torch.inference_mode():
        maps = small_net.encode_clicks(image, points, prev)
        direct = small_net.logits_from_maps(image, maps)
        feats, ctx = small_net.site_features(site, image, maps)
        via_site = small_net.logits_from_site(site, feats, ctx)
    assert feats.shape == (2, small_net.site_channels(site), 12, 16)
    torch.testing.assert_close(via_site, direct, rtol=1e-5, atol=1e-5)


def test_sites_and_normalisation_contract(small_net):
    assert small_net.brs_sites == {"f-BRS-A": "A", "f-BRS-B": "A", "f-BRS-C": "C"}
    assert (small_net.site_channels("A"), small_net.site_channels("C")) == (270, 96)
    assert small_net.input_normalization == "imagenet" and small_net.uses_prev_mask
    with pytest.raises(ValueError, match="not 'B'"):
        small_net.site_channels("B")


def test_gradients_reach_the_click_maps(small_net):
    # DistMap-BRS differentiates w.r.t. the click maps (the last two channels)
    image, points, prev = _inputs()
    maps = small_net.encode_clicks(image, points, prev).requires_grad_(True)
    small_net.logits_from_maps(image, maps).sum().backward()
    assert maps.grad is not None and maps.grad[:, 1:].abs().sum() > 0


def test_predictor_runs_every_mode_on_a_small_image(small_net):
    rng = np.random.default_rng(0)
    image = (rng.random((32, 40, 3)) * 255).astype(np.uint8)
    for mode in nf.MODES:
        p = nf.Predictor(small_net, mode=mode, device="cpu", lbfgs_maxfun=2, zoom_in=None)
        p.set_image(image)
        for y, x, pos in [(16, 20, True), (3, 3, False)]:
            prob = p.add_click(y, x, positive=pos)
        assert prob.shape == (32, 40) and np.all((prob >= 0) & (prob <= 1))


# -- config reading ------------------------------------------------------------------------
def test_official_config_maps_to_the_registered_architecture():
    cfg = parse_ritm_config(_official_config())
    assert cfg == RITMModelConfig(18, 48, True, True, 5.0, True, True, False)
    assert cfg.registry_entry() == ("ritm_hrnet18s_itermask", {})
    baseline = parse_ritm_config(
        _official_config(width=18, ocr_width=64, small=False, with_prev_mask=False)
    )
    assert baseline.registry_entry() == ("ritm_hrnet18_baseline", {})
    other = parse_ritm_config(_official_config(norm_radius=260, use_disks=False))
    assert other.registry_entry() == (
        "ritm_hrnet18s_itermask",
        {"norm_radius": 260.0, "use_disks": False},
    )
    net = build_from_checkpoint({}, {"config": _official_config(norm_radius=7)})
    assert isinstance(net, RITMHRNetNet) and net.norm_radius == 7.0


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"class": "os.system", "params": {}}, "unknown model class 'os.system'"),
        ({"class": "builtins.eval", "params": {}}, "unknown model class"),
        ({"class": "isegm.model.is_deeplab_model.DeeplabModel", "params": {}}, "does not build"),
        ({"class": ["os", "system"], "params": {}}, "dotted name"),
        ({"class": HRNET_MODEL, "params": []}, "'params' is not a mapping"),
        ({"class": HRNET_MODEL, "params": {}, "run": "x"}, "unknown top-level"),
        (_official_config(evil="rm -rf /"), r"unknown arguments \['evil'\]"),
        (_official_config(norm_layer="os.system"), "norm_layer 'os.system'"),
        (_official_config(use_rgb_conv=True), "use_rgb_conv"),
        (_official_config(conv_extend=True), "conv_extend"),
        (_official_config(clicks_groups=[2, 5]), "clicks_groups"),
        (_official_config(ocr_width=0), "ocr_width=0"),
        (_official_config(width=10**6), "width must be one of"),
        (_official_config(width="18"), "width must be one of"),
        (_official_config(small="yes"), "small must be true or false"),
        (_official_config(norm_radius=float("nan")), "norm_radius"),
        (_official_config(norm_mean_std=([0, 0, 0], [1, 1, 1])), "ImageNet"),
        ({"class": HRNET_MODEL, "params": {}}, "use_rgb_conv"),  # RITM's defaults apply
        ("HRNetModel", "not a"),
    ],
)
def test_unknown_or_hostile_configs_are_refused(config, match):
    with pytest.raises(RITMConfigError, match=match) as info:
        parse_ritm_config(config)
    assert "nothing named in the file is imported or called" in str(info.value)


def test_class_typed_value_must_be_declared_as_such():
    config = _official_config()
    config["params"]["width"]["type"] = "class"
    with pytest.raises(RITMConfigError, match="'width' is declared as 'class'"):
        parse_ritm_config(config)


# -- files ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def official_file(tmp_path_factory, small_net) -> Path:
    path = tmp_path_factory.mktemp("ritm") / "coco_lvis_h18s_itermask.pth"
    torch.save({"state_dict": small_net.state_dict(), "config": _official_config()}, path)
    return path


def test_official_file_loads_with_both_loaders(official_file, small_net):
    image, points, prev = _inputs(33, 40)
    with torch.inference_mode():
        want = small_net(image, points, prev)["instances"]
    for loaded in (
        load_ritm_model(official_file, device="cpu"),
        nf.load_model(official_file, device="cpu"),
    ):
        assert isinstance(loaded, RITMHRNetNet) and not loaded.training
        assert loaded.arch_name == "ritm_hrnet18s_itermask"
        assert not any(p.requires_grad for p in loaded.parameters())
        with torch.inference_mode():
            torch.testing.assert_close(loaded(image, points, prev)["instances"], want)


def test_zoo_name_loads_from_the_cache(official_file, monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path))
    (tmp_path / official_file.name).write_bytes(official_file.read_bytes())
    net = nf.load_model("coco_lvis_h18s_itermask", device="cpu")
    assert net.arch_name == "ritm_hrnet18s_itermask"


def test_zoo_lists_the_five_release_checkpoints():
    release = "https://github.com/saic-vul/ritm_interactive_segmentation/releases/download/v1.0/"
    names = [
        "sbd_h18_itermask",
        "coco_lvis_h18_baseline",
        "coco_lvis_h18s_itermask",
        "coco_lvis_h18_itermask",
        "coco_lvis_h32_itermask",
    ]
    for name in names:
        info = zoo.CHECKPOINTS[name]
        assert info.url == f"{release}{name}.pth" and info.filename == f"{name}.pth"
        assert registry.ARCHITECTURES[info.arch].family == "ritm"
        assert info.size_mb > 0
    assert zoo.CHECKPOINTS["coco_lvis_h18_baseline"].arch == "ritm_hrnet18_baseline"


def test_refused_config_in_a_file(tmp_path, small_net):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_net.state_dict(), "config": _official_config(evil=True)}, path)
    with pytest.raises(RITMConfigError, match="unknown arguments"):
        load_ritm_model(path, device="cpu")


def test_load_model_refuses_a_refused_config(tmp_path, small_net):
    path = tmp_path / "evil.pth"
    torch.save(
        {
            "state_dict": small_net.state_dict(),
            "config": _official_config(use_disks=False, norm_radius=260, evil=1),
        },
        path,
    )
    with pytest.raises(RITMConfigError):
        nf.load_model(path, device="cpu")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, small_net):
    path = tmp_path / "mismatch.pth"
    torch.save(
        {"state_dict": small_net.state_dict(), "config": _official_config(with_prev_mask=False)},
        path,
    )
    with pytest.raises(registry.CheckpointError, match="do not fit") as info:
        load_ritm_model(path, device="cpu")
    assert "maps_transform.0.weight" in str(info.value)


class _Payload:
    """Pickles as a call to ``open(marker, "w")``: it must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_code_in_the_config_is_refused_without_running(tmp_path, small_net):
    marker = tmp_path / "executed"
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": small_net.state_dict(), "config": _Payload(marker)}, path)
    for loader in (load_ritm_model, nf.load_model):
        with pytest.raises(registry.CheckpointError, match="refused"):
            loader(path, device="cpu")
    assert not marker.exists()


def test_non_finite_weights_are_refused(tmp_path, small_net):
    state = {k: v.clone() for k, v in small_net.state_dict().items()}
    state["maps_transform.3.scale"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save({"state_dict": state, "config": _official_config()}, path)
    with pytest.raises(registry.CheckpointError, match="maps_transform.3.scale"):
        load_ritm_model(path, device="cpu")
