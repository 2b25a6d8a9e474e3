"""Robustness: hostile and damaged checkpoints, bad images and clicks, no lost work, memory.

Each test here is a row of ``docs/reliability.md``. A behaviour found wrong gets its test
first, stating the wanted behaviour, marked ``xfail(strict=True)`` with the exact problem
and the file to fix, so that the fix turns it into a failure ("XPASS") that asks for the
marker to go. None is marked now.
"""

from __future__ import annotations

import gc
import importlib
import os
import pickle
import struct
import types
import zipfile

import numpy as np
import pytest
import torch

import napari_fbrs as nf
from napari_fbrs.core.models.registry import (
    CheckpointError,
    build_model,
    identify_architecture,
    load_model,
    load_state_dict_file,
)
from napari_fbrs.core.predictor import Predictor
from napari_fbrs.core.session import SegmentationSession, SessionClick, promoted_dtype
from napari_fbrs.core.testing import disk_net as _disk_net

H, W = 40, 48
RADIUS = 5.0


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread: the tiny networks here are faster so, on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def disk_net(radius: float = RADIUS):
    return _disk_net(radius)


@pytest.fixture(scope="module")
def net():
    return disk_net()


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny_test")


def nobrs(net, **kw) -> Predictor:
    kw = {"mode": "NoBRS", "device": "cpu", "zoom_in": None, "with_flip": False, **kw}
    return Predictor(net, **kw)


def check_prob(prob, shape):
    assert isinstance(prob, np.ndarray) and prob.dtype == np.float32 and prob.shape == shape
    assert np.isfinite(prob).all() and prob.min() >= 0.0 and prob.max() <= 1.0


def held_bytes(root) -> int:
    """Bytes of the numpy arrays and torch tensors reachable from ``root`` (data counted
    once per buffer; functions, modules, classes and networks are not followed)."""
    skip = (
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.ModuleType,
        type,
        torch.nn.Module,
    )
    seen: set[int] = set()
    buffers: dict[int, int] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes if base.base is None else obj.nbytes
            continue
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            buffers[storage.data_ptr()] = storage.nbytes()
            continue
        stack.extend(gc.get_referents(obj))
    return sum(buffers.values())


# ================================================================================ checkpoints


class Marker:
    """Unpickling this creates ``path``: the proof that a file ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def state_dict(tiny):
    return {k: v.clone() for k, v in tiny.state_dict().items()}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("layout", ["zip", "legacy", "plain-pickle"])
def test_a_hostile_pickle_is_refused_and_runs_nothing(tmp_path, state_dict, layout):
    marker = tmp_path / "PWNED"
    path = tmp_path / "hostile.pth"
    payload = {"state_dict": state_dict, "extra": Marker(marker)}
    if layout == "plain-pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=layout == "zip")
    with pytest.raises(CheckpointError, match="refused") as info:
        load_model(path, device="cpu")
    assert "nothing was executed" in str(info.value)
    assert not marker.exists()


def test_the_refusal_names_what_the_file_tried_to_run(tmp_path, state_dict):
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": state_dict, "x": Marker(tmp_path / "PWNED")}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_file(path)
    assert "posix.system" in str(info.value) and "In PyTorch 2.6" not in str(info.value)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_truncated_checkpoints_are_explained(tmp_path, state_dict, layout, keep):
    full = tmp_path / "full.pth"
    torch.save({"state_dict": state_dict}, full, _use_new_zipfile_serialization=layout == "zip")
    data = full.read_bytes()
    path = tmp_path / "half.pth"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_model(path, device="cpu")
    assert "download it again" in str(info.value)


NOT_CHECKPOINTS = {
    "html": b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
    "git-lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:0a1b\nsize 40000000\n",
    "random": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    "npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
}


@pytest.mark.parametrize("kind", sorted(NOT_CHECKPOINTS))
def test_a_file_that_is_no_checkpoint_is_not_called_hostile(tmp_path, kind):
    path = tmp_path / "model.pth"
    path.write_bytes(NOT_CHECKPOINTS[kind])
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "pickled code" not in message and "truncated or corrupt" in message


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    for kind, data in NOT_CHECKPOINTS.items():
        path = tmp_path / f"{kind}.pth"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=path.name):
            load_model(path, device="cpu")


def test_corrupted_bytes_inside_a_checkpoint_are_detected(tmp_path, state_dict):
    path = tmp_path / "model.pth"
    torch.save(state_dict, path)
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)  # the largest tensor
    data = bytearray(path.read_bytes())
    # the local header's own name/extra lengths (torch pads the local extra field)
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    offset = info.header_offset + 30 + name_len + extra_len
    data[offset : offset + 16] = bytes(16)
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(path, device="cpu")


def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, state_dict):
    state_dict["out.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match="out.weight"):
        load_model(path, device="cpu")


def test_a_wrong_architecture_names_the_closest_one_and_the_keys(tmp_path, state_dict):
    state_dict["out.weight"] = torch.zeros(1, 9, 1, 1)  # wrong shape
    state_dict["extra.bias"] = torch.zeros(3)  # unexpected
    del state_dict["mid.0.bias"]  # missing
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": state_dict}, path)
    with pytest.raises(CheckpointError, match="closest is 'tiny_test'") as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "missing keys 1 (mid.0.bias)" in message
    assert "unexpected keys 1 (extra.bias)" in message
    expected = tuple(build_model("tiny_test").state_dict()["out.weight"].shape)
    shown = ", ".join(str(n) for n in expected)
    assert f"wrong shapes 1 (out.weight (1, 9, 1, 1) instead of ({shown}))" in message


def test_an_unrelated_state_dict_is_not_given_a_closest_architecture():
    with pytest.raises(CheckpointError) as info:
        identify_architecture({"encoder.layer.0.weight": torch.zeros(3, 3)})
    assert "closest" not in str(info.value) and "encoder.layer.0.weight" in str(info.value)


def test_checkpoints_that_hold_no_state_dict(tmp_path):
    for i, obj in enumerate([[1, 2, 3], "weights", torch.zeros(3)]):
        path = tmp_path / f"{i}.pth"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="not a state dict"):
            load_model(path, device="cpu")
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with pytest.raises(CheckpointError, match="no known architecture"):
        load_model(empty, device="cpu")


def test_missing_files_folders_and_unknown_names(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_file(tmp_path / "nothing.pth")
    with pytest.raises(KeyError, match="not a file and not a known model"):
        load_model(tmp_path, device="cpu")  # a folder
    with pytest.raises(KeyError, match="known model"):
        load_model("resnet34_dh128_sbdd", device="cpu")


def test_a_damaged_cached_zoo_checkpoint_says_where_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path / "cache"))
    from napari_fbrs.core import zoo

    path = zoo.cache_dir() / zoo.CHECKPOINTS["hrnet18_ocr64_sbd"].filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 half a download")
    with pytest.raises(CheckpointError, match="download it again") as info:
        load_model("hrnet18_ocr64_sbd", device="cpu")
    assert str(path) in str(info.value)


# ================================================================================ images

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
          np.float16, np.float32, np.float64, np.bool_]  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", [(H, W), (H, W, 3), (H, W, 4)], ids=["grey", "rgb", "rgba"])
def test_every_numeric_dtype_and_layout(net, dtype, layout):
    rng = np.random.default_rng(0)
    if np.dtype(dtype) == np.bool_:
        image = rng.random(layout) > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, layout, dtype=dtype, endpoint=True)
    else:
        image = (rng.standard_normal(layout) * 1000).astype(dtype)
    p = nobrs(net)
    p.set_image(image)
    check_prob(p.add_click(20, 24), (H, W))
    assert p.mask[20, 24]


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.full((H, W), np.nan),
        lambda: np.full((H, W), np.inf, np.float32),
        lambda: np.where(np.eye(H, W, dtype=bool), np.nan, np.linspace(0, 1, H * W).reshape(H, W)),
        lambda: np.where(np.eye(H, W, dtype=bool), -np.inf, 1.0),
        lambda: np.full((H, W), np.finfo(np.float64).max),
        lambda: np.full((H, W, 3), np.nan, np.float16),
        lambda: np.zeros((H, W)),
    ],
    ids=[
        "all-nan",
        "all-inf",
        "nan-diagonal",
        "-inf-diagonal",
        "float64-max",
        "rgb-nan-f16",
        "flat",
    ],
)
def test_nan_inf_and_flat_images(net, make):
    p = nobrs(net)
    with np.errstate(all="ignore"):
        p.set_image(make())
    check_prob(p.add_click(20, 24), (H, W))


def test_clicks_on_nan_pixels(net):
    image = np.random.default_rng(0).random((H, W))
    image[15:25, 20:30] = np.nan
    p = nobrs(net)
    p.set_image(image)
    check_prob(p.add_click(20, 24), (H, W))
    check_prob(p.add_click(18, 26, positive=False), (H, W))


@pytest.mark.parametrize("mode", nf.MODES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2, 3)])
def test_one_pixel_and_one_row_images(tiny, mode, shape):
    p = Predictor(tiny, mode=mode, device="cpu", lbfgs_maxfun=3)
    p.set_image(np.full(shape, 7, np.uint8))
    check_prob(p.add_click(0, 0), shape[:2])
    check_prob(p.add_click(shape[0] - 1, shape[1] - 1, positive=False), shape[:2])
    check_prob(p.undo(), shape[:2])


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((0, W)), "empty"),
        (np.zeros((H, 0, 3)), "empty"),
        (np.zeros(W), "expected a \\(H, W\\)"),
        (np.zeros((2, H, W)), "expected a \\(H, W\\)"),
        (np.zeros((H, W, 2)), "expected a \\(H, W\\)"),
        (np.zeros((H, W, 1)), "expected a \\(H, W\\)"),
        (np.zeros((1, 2, H, W)), "expected a \\(H, W\\)"),
        (np.zeros((H, W), complex), "complex"),
        (np.zeros((H, W), object), "non-numeric"),
        (np.zeros((H, W), "U3"), "non-numeric"),
        (np.zeros((H, W), "datetime64[s]"), "non-numeric"),
        (np.array(3.0), "expected a \\(H, W\\)"),
    ],
    ids=[
        "0-rows",
        "0-cols",
        "1d",
        "stack",
        "2-channels",
        "1-channel",
        "4d",
        "complex",
        "object",
        "str",
        "datetime",
        "scalar",
    ],  # fmt: skip
)
def test_images_that_cannot_be_segmented_are_explained(net, image, match):
    p = nobrs(net)
    p.set_image(np.zeros((4, 4), np.uint8))
    p.add_click(1, 1)
    with pytest.raises(ValueError, match=match):
        p.set_image(image)
    assert p.image_shape == (4, 4) and len(p.clicks) == 1  # nothing changed


def test_read_only_memmap_and_dask_images(net, tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8)
    ro = image.copy()
    ro.flags.writeable = False
    path = tmp_path / "image.raw"
    image.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(H, W))
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(image, chunks=(16, 16))
    probs = []
    for img in (image, ro, mm, lazy):
        p = nobrs(net)
        p.set_image(img)
        probs.append(p.add_click(20, 24))
    for prob in probs[1:]:
        np.testing.assert_array_equal(prob, probs[0])
    assert not mm.flags.writeable  # untouched


def test_a_lazy_stack_is_read_one_slice_at_a_time(net):
    da = pytest.importorskip("dask.array")
    reads = []

    def load(block, block_info=None):
        if block_info is not None:  # not dask's probe of the output type
            reads.append(block_info[None]["chunk-location"][0])
        return np.full(block.shape, 100, np.uint8)

    stack = da.zeros((50, H, W), dtype=np.uint8, chunks=(1, H, W))
    stack = stack.map_blocks(load, dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8))
    s = SegmentationSession(stack, predictor_factory=lambda: nobrs(net))
    s.add_click(20, 24, key=(31,))
    check_prob(s.predict((31,)), (H, W))
    assert set(reads) == {31}


def test_a_20000_by_20000_image_opens_without_reading_its_pixels(tmp_path):
    """A 20000 x 20000 uint8 image (400 MB) as a lazy array: opening a session, clicking
    and checking clicks read no pixel; the labels are allocated lazily by the OS."""
    da = pytest.importorskip("dask.array")
    reads = []

    def load(block, block_info=None):
        if block_info is not None:
            reads.append(block_info[None]["chunk-location"])
        return np.zeros(block.shape, np.uint8)

    big = da.zeros((20000, 20000), dtype=np.uint8, chunks=4096)
    big = big.map_blocks(load, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
    labels = np.zeros((20000, 20000), np.uint8)  # calloc: no page is touched yet
    s = SegmentationSession(big, labels=labels)
    s.add_click(19999.4, 0.0)
    with pytest.raises(ValueError, match="outside the image of shape \\(20000, 20000\\)"):
        s.add_click(20000.0, 5.0)
    assert s.clicks() == [SessionClick(19999.4, 0.0, True)] and reads == []


def test_the_predictor_holds_little_more_than_the_image(net):
    """A grey uint8 image is kept as its own pixels (not 12 bytes per pixel of float RGB);
    with max_size the network's views stay small, even after clicks."""
    image = np.zeros((512, 512), np.uint8)
    p = Predictor(net, mode="NoBRS", device="cpu", max_size=64, zoom_in=None)
    p.set_image(image)
    assert held_bytes(p) <= 4 * image.nbytes
    p.add_click(100, 100)
    # + one (512, 512) float32 probability map for the click's state
    assert held_bytes(p) <= 4 * image.nbytes + image.size * 4


def test_float64_beyond_the_float32_range_keeps_its_contrast(net):
    """Values above ~3.4e38 would become Inf in float32 and the image would come out flat;
    they are scaled in float64 first."""
    from napari_fbrs.core.image import ImageSource, to_unit_rgb

    image = np.zeros((16, 16))
    image[4:12, 4:12] = 1e300
    image[0, 0] = 5e299
    unit = to_unit_rgb(image)
    assert unit.max() == 1.0 and unit[0, 8, 8] == 1.0 and unit[0, 1, 1] == 0.0
    assert np.isclose(unit[0, 0, 0], 0.5, atol=0.01)
    view = ImageSource(image, normalization="unit").view((0, 15, 0, 15), (16, 16))
    np.testing.assert_array_equal(view[0].numpy(), unit)
    p = Predictor(net, mode="NoBRS", device="cpu", zoom_in=None)
    p.set_image(image)
    check_prob(p.add_click(8, 8), (16, 16))


def test_a_contrast_window_too_narrow_for_float32_gives_no_warning():
    """A window whose width underflows to 0 in float32 (found by hypothesis) is treated as
    flat: values in [0, 1], no division-by-zero warning."""
    import warnings

    from napari_fbrs.core.image import to_unit_rgb

    image = np.array([[1e-46, 2e-46], [3e-46, 0.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unit = to_unit_rgb(image, contrast_limits=(1e-46, 3e-46))
    assert unit.shape == (3, 2, 2) and np.isfinite(unit).all()
    assert unit.min() >= 0.0 and unit.max() <= 1.0


def test_the_predictor_copies_the_image(net):
    """Editing the caller's array after set_image changes nothing the predictor sees."""
    image = np.zeros((32, 32), np.uint8)
    p = Predictor(net, mode="NoBRS", device="cpu", zoom_in=None)
    p.set_image(image)
    before = p.add_click(16, 16).copy()
    p.undo()
    image[:] = 255
    np.testing.assert_array_equal(p.add_click(16, 16), before)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64, np.bool_])
def test_a_huge_crop_is_sampled_like_bilinear_resizing(dtype):
    """Views much smaller than their crop read only the pixels they interpolate from and
    agree with torch's bilinear resizing of the whole crop."""
    from napari_fbrs.core.image import ImageSource

    rng = np.random.default_rng(0)
    if dtype is np.bool_:
        image = rng.random((301, 257)) > 0.5
    else:
        image = (rng.random((301, 257, 3)) * 200).astype(dtype)
    source = ImageSource(image, normalization="imagenet")
    sampled = source.view((5, 290, 7, 250), (40, 33))  # 286 x 244 crop: sampled
    whole = torch.nn.functional.interpolate(
        source.view((5, 290, 7, 250), (286, 244)), size=(40, 33), mode="bilinear",
        align_corners=True,
    )  # fmt: skip
    assert sampled.shape == (1, 3, 40, 33) and sampled.dtype == torch.float32
    # torch places the taps in float32 (positions ~300 carry ~3e-5 error): 2e-4 covers that,
    # a wrong tap or weight is off by ~0.01 or more
    torch.testing.assert_close(sampled, whole, atol=2e-4, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 5, 17])
def test_reflect_indices_mirror_like_numpy_pad(n):
    from napari_fbrs.core.image import reflect_indices

    axis = np.arange(n)
    for start, stop in [(0, n - 1), (-3, n + 2), (-(2 * n + 1), 3 * n), (n - 1, n + 4)]:
        pad = max(-start, stop - n + 1, 0)
        expected = np.pad(axis, pad, mode="reflect" if n > 1 else "edge")[
            start + pad : stop + pad + 1
        ]
        np.testing.assert_array_equal(reflect_indices(start, stop, n), expected)


@pytest.mark.parametrize("size", [(90, 70), (12, 9)])  # converted whole / sampled
def test_a_view_past_the_border_is_the_mirrored_image(size):
    """A crop reaching past the image (ZoomIn.beyond_border) reads the image mirrored at
    its edges, on both the whole-crop and the sampled path."""
    from napari_fbrs.core.image import ImageSource

    rng = np.random.default_rng(3)
    image = (rng.random((60, 50, 3)) * 255).astype(np.uint8)
    padded = np.pad(image, ((20, 10), (7, 13), (0, 0)), mode="reflect")
    ours = ImageSource(image).view((-20, 69, -7, 62), size)
    reference = ImageSource(padded).view((0, 89, 0, 69), size)
    assert ours.shape == (1, 3, *size)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_out_of_memory_while_reading_an_image_changes_nothing(net):
    """A uint8 image of 2^23 x 2^23 pixels (a broadcast view: no memory) cannot be turned
    into float32 (256 TiB, beyond any address space): a MemoryError with numbers, and the
    predictor keeps its image and clicks."""
    p = nobrs(net)
    p.set_image(np.zeros((8, 8), np.uint8))
    p.add_click(3, 3)
    huge = np.broadcast_to(np.uint8(0), (2**23, 2**23))
    with pytest.raises(MemoryError, match="TiB"):
        p.set_image(huge)
    assert p.image_shape == (8, 8) and len(p.clicks) == 1
    check_prob(p.prob, (8, 8))


# ================================================================================ clicks


@pytest.mark.parametrize(
    "y, x, match",
    [
        (H, 0, "outside the image"),
        (-0.51, 0, "outside the image"),
        (0, W - 0.5, "outside the image"),
        (1e300, 0, "outside the image"),
        (np.nan, 3, "not a finite"),
        (3, np.inf, "not a finite"),
        ("a", 3, "could not convert"),
    ],
)
def test_clicks_off_the_image_change_nothing(net, y, x, match):
    p = nobrs(net)
    p.set_image(np.zeros((H, W), np.uint8))
    prob = p.add_click(20, 24).copy()
    with pytest.raises(ValueError, match=match):
        p.add_click(y, x)
    assert len(p.clicks) == 1 and p.can_undo and not p.can_redo
    np.testing.assert_array_equal(p.prob, prob)


def test_clicks_on_the_border_half_pixels_are_inside(net):
    p = nobrs(net)
    p.set_image(np.zeros((H, W), np.uint8))
    check_prob(p.add_click(-0.5, -0.5), (H, W))
    check_prob(p.add_click(H - 0.51, W - 0.51, positive=False), (H, W))
    assert p.clicks[0].y == 0.0 and p.clicks[1].x == W - 1.0  # clamped onto the grid


def test_no_image_yet(net):
    p = nobrs(net)
    with pytest.raises(RuntimeError, match="set_image"):
        p.add_click(1, 1)
    with pytest.raises(RuntimeError, match="set_image"):
        _ = p.prob
    assert p.undo is not None and p.clicks == []


@pytest.mark.parametrize("mode", ["NoBRS", "f-BRS-B", "DistMap-BRS"])
def test_duplicated_clicks(tiny, mode):
    p = Predictor(tiny, mode=mode, device="cpu", lbfgs_maxfun=3)
    p.set_image(np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8))
    for _ in range(5):
        check_prob(p.add_click(20, 24), (H, W))
    check_prob(p.add_click(20, 24, positive=False), (H, W))  # contradicting
    assert len(p.clicks) == 6


def test_a_thousand_clicks_in_a_session(net):
    """1,000 clicks on one object through the session (the widget's path): every one is
    predicted, the history walks back the whole way, nothing is lost."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 24), dtype=np.uint8)
    s = SegmentationSession(image, predictor_factory=lambda: nobrs(net, net_clicks_limit=8))
    ys, xs, positive = rng.uniform(0, 23, 1000), rng.uniform(0, 23, 1000), rng.random(1000) < 0.7
    clicks = [(float(y), float(x), bool(p)) for y, x, p in zip(ys, xs, positive, strict=True)]
    for y, x, positive in clicks:
        s.add_click(y, x, positive)
        check_prob(s.predict(), (24, 24))
    assert [tuple(c) for c in s.clicks()] == clicks
    assert s.predictor().clicks[-1].y == clicks[-1][0]
    for _ in range(1000):
        s.undo()
    assert s.clicks() == [] and not s.can_undo
    s.redo()
    check_prob(s.predict(), (24, 24))


@pytest.mark.parametrize("mode", ["NoBRS", "RGB-BRS"])
def test_the_predictor_history_is_bounded(net, mode):
    zoom = nf.ZoomIn(target_size=64, min_crop_size=16)
    # min_size off: views stay at most 64 px, so map_bytes bounds a state's arrays
    p = Predictor(net, mode=mode, device="cpu", with_flip=False, lbfgs_maxfun=2, zoom_in=zoom,
                  net_clicks_limit=4, min_size=None)  # fmt: skip
    p.set_image(np.zeros((64, 64), np.uint8))
    rng = np.random.default_rng(0)
    sizes = []
    for i in range(120):
        p.add_click(*rng.uniform(0, 63, 2), positive=bool(i % 3))
        if i + 1 in (40, 120):
            sizes.append(held_bytes(p))
    map_bytes = 64 * 64 * 4
    assert sizes[1] - sizes[0] < 20 * map_bytes  # 80 more clicks, < 20 maps more
    # undo walks back through all of it: recent clicks exactly, older ones recomputed
    recent = [p.prob.copy()]
    for _ in range(5):
        recent.append(p.undo().copy())
    for expected in reversed(recent[:-1]):
        np.testing.assert_array_equal(p.redo(), expected)
    for _ in range(119):
        prob = p.undo()
        check_prob(prob, (64, 64))
        assert held_bytes(p) - sizes[1] < 20 * map_bytes
    assert len(p.clicks) == 1 and p.can_undo
    check_prob(p.prob, (64, 64))
    assert not p.undo().any() and not p.can_undo  # no clicks: zeros
    for _ in range(120):
        p.redo()
    assert len(p.clicks) == 120 and not p.can_redo


def test_undo_past_the_kept_states_recomputes_the_same_clicks(net):
    """A state beyond FULL_STATES is recomputed from its clicks in its crop: with NoBRS
    (no warm start) and no previous-mask input, that is the same map as before."""
    from napari_fbrs.core.predictor import FULL_STATES

    p = Predictor(net, mode="NoBRS", device="cpu", zoom_in=nf.ZoomIn(target_size=48,
                  min_crop_size=16))  # fmt: skip
    p.set_image(np.random.default_rng(1).integers(0, 255, (48, 48), dtype=np.uint8))
    rng = np.random.default_rng(2)
    maps = []
    for i in range(FULL_STATES + 6):
        maps.append(p.add_click(*rng.uniform(0, 47, 2), positive=bool(i % 2 == 0)).copy())
    assert p._history[2].thin and p._history[2].prob is None  # memory was released
    for _ in range(FULL_STATES + 6 - 3):
        p.undo()
    assert len(p.clicks) == 3
    np.testing.assert_allclose(p.prob, maps[2], atol=1e-6)


def test_encoding_many_clicks_takes_memory_independent_of_their_number():
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from napari_fbrs.core.clicks import Click, clicks_to_points, distance_maps

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.numel = max(self.numel, t.numel())
            return out

    rng = np.random.default_rng(0)
    clicks = [
        Click(float(y), float(x), bool(i % 2))
        for i, (y, x) in enumerate(rng.uniform(0, 31, (400, 2)))
    ]
    points = clicks_to_points([clicks, clicks])
    with Largest() as probe:
        maps = distance_maps(points, 32, 32)
    assert maps.shape == (2, 2, 32, 32)
    assert probe.numel <= 8 * 2 * 32 * 32


# ================================================================================ session


@pytest.fixture
def session(net):
    image = np.random.default_rng(0).integers(0, 255, (H, W), dtype=np.uint8)
    return SegmentationSession(image, predictor_factory=lambda: nobrs(net))


@pytest.mark.parametrize(
    "dtype, full, promoted",
    [
        (np.uint8, 255, np.uint16),
        (np.int8, 127, np.int16),
        (np.uint16, 65535, np.uint32),
        (np.int16, 32767, np.int32),
        (np.uint32, 2**32 - 1, np.uint64),
        (np.bool_, 1, np.uint8),
    ],  # fmt: skip
    ids=lambda v: str(v),
)
def test_a_labels_dtype_that_cannot_hold_the_next_id_is_promoted_never_wrapped(
    net, dtype, full, promoted
):
    image = np.zeros((H, W), np.uint8)
    labels = np.zeros((H, W), dtype)
    labels[0, 0] = full
    s = SegmentationSession(image, labels=labels, predictor_factory=lambda: nobrs(net))
    s.add_click(20, 24)
    s.predict()
    info = s.commit()
    want = int(full) + 1
    assert info.label == want and info.promoted_from == np.dtype(dtype)
    assert s.labels.dtype == promoted and s.labels[20, 24] == want and s.labels[0, 0] == full
    assert labels[20, 24] == 0  # the caller's array was not written with a wrapped id
    s.undo()
    assert s.labels.dtype == dtype and s.labels[20, 24] == 0 and s.labels[0, 0] == full
    s.redo()
    assert s.labels.dtype == promoted and s.labels[20, 24] == want


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_labels_at_the_widest_dtype_limit_raise_and_change_nothing(net, dtype):
    labels = np.zeros((H, W), dtype)
    labels[0, 0] = np.iinfo(dtype).max
    s = SegmentationSession(
        np.zeros((H, W), np.uint8), labels=labels, predictor_factory=lambda: nobrs(net)
    )
    s.add_click(20, 24)
    s.predict()
    with pytest.raises(OverflowError, match="does not fit"):
        s.commit()
    assert s.labels is labels and s.labels[20, 24] == 0 and len(s.clicks()) == 1
    assert promoted_dtype(np.uint8, 2**40) == np.uint64


def test_labels_that_are_not_integers_are_refused(net):
    image = np.zeros((H, W), np.uint8)
    for bad, error, match in [
        (np.zeros((H, W), np.float32), TypeError, "integer dtype"),
        (np.zeros((H, W + 1), np.uint8), ValueError, "do not match"),
        ([[0] * W] * H, TypeError, "in-memory numpy array"),
    ]:
        with pytest.raises(error, match=match):
            SegmentationSession(image, labels=bad)


def test_read_only_labels_are_explained(net):
    labels = np.zeros((H, W), np.uint16)
    labels.flags.writeable = False
    s = SegmentationSession(
        np.zeros((H, W), np.uint8), labels=labels, predictor_factory=lambda: nobrs(net)
    )
    s.add_click(20, 24)
    s.predict()
    with pytest.raises(ValueError, match="labels") as info:
        s.commit()
    assert "read-only" in str(info.value) and "copy" in str(info.value)


def test_read_only_labels_lose_nothing(net):
    labels = np.zeros((H, W), np.uint16)
    labels.flags.writeable = False
    s = SegmentationSession(
        np.zeros((H, W), np.uint8), labels=labels, predictor_factory=lambda: nobrs(net)
    )
    s.add_click(20, 24)
    s.predict()
    with pytest.raises(ValueError, match="read-only"):
        s.commit()
    assert len(s.clicks()) == 1 and s.is_up_to_date() and not s.labels.any()
    s.set_labels(np.zeros((H, W), np.uint16))  # a writable array: the same object commits
    assert s.commit().label == 1


def test_a_session_accepts_any_array_like():
    s = SegmentationSession([[0, 1], [2, 3]])
    assert s.spatial_shape == (2, 2)


def test_malformed_clicks_are_explained(session):
    with pytest.raises(ValueError, match="\\(y, x, positive\\)"):
        session.set_clicks((), [(1.0, 2.0, True, 4)])


def test_malformed_clicks_change_nothing(session):
    session.add_click(3, 4)
    for bad in ([(1.0, 2.0, True, 4)], [(1.0,)], [("a", 2.0, True)], [(np.nan, 1.0, True)]):
        with pytest.raises((TypeError, ValueError)):
            session.set_clicks((), [(5.0, 5.0, True), *bad])
        assert session.clicks() == [SessionClick(3.0, 4.0, True)]
    with pytest.raises(ValueError, match="slice key"):
        session.add_click(1, 1, key=(0,))


@pytest.mark.parametrize(
    "error", [MemoryError("simulated"), RuntimeError("CUDA error"), ValueError("x")]
)
def test_an_exception_in_the_worker_keeps_all_state(session, monkeypatch, error):
    session.add_click(20, 24)
    session.predict()
    session.commit()
    session.add_click(10, 10)
    session.predict()
    labels = session.labels.copy()
    prob = session.prob().copy()

    def boom(self, y, x, positive=True):
        raise error

    monkeypatch.setattr(Predictor, "add_click", boom)
    session.add_click(30, 40, positive=False)
    request = session.request()
    with pytest.raises(type(error)):
        session.compute(request)
    # everything is as it was: the labels, the last good preview, the clicks, the history
    np.testing.assert_array_equal(session.labels, labels)
    np.testing.assert_array_equal(session.prob(), prob)
    assert len(session.clicks()) == 2 and not session.is_up_to_date()
    change = session.rollback(request)
    assert change is not None and len(session.clicks()) == 1 and session.is_up_to_date()
    monkeypatch.undo()
    session.undo()  # the click at (10, 10)
    session.undo()  # the commit
    assert not session.labels.any() and len(session.clicks()) == 1


def test_the_model_switched_mid_prediction(net):
    """The factory (model, settings) changes while a prediction runs: that prediction
    finishes with its predictor, the next object gets the new one."""
    other = disk_net(radius=9.0)
    image = np.zeros((H, W), np.uint8)
    s = SegmentationSession(image, predictor_factory=lambda: nobrs(net))
    s.add_click(20, 24)
    request = s.request()
    original = Predictor.add_click

    def switching(self, y, x, positive=True):
        s.predictor_factory = lambda: nobrs(other)  # the user picks another model now
        return original(self, y, x, positive)

    Predictor.add_click = switching
    try:
        result = s.compute(request)
    finally:
        Predictor.add_click = original
    assert s.apply(result)
    assert s.predictor().net is net
    small = int(s.mask().sum())
    s.commit()
    s.add_click(20, 24)
    s.predict()
    assert s.predictor().net is other and int(s.mask().sum()) > small


def test_every_commit_can_be_undone_and_labels_change_only_by_commits(session):
    states = [session.labels.copy()]
    for y, x in [(8, 8), (8, 30), (30, 8), (30, 30), (20, 20)]:
        session.add_click(y, x)
        session.add_click(y + 1, x + 1)
        session.predict()
        np.testing.assert_array_equal(session.labels, states[-1])  # clicks: no label change
        session.commit(overwrite=(y, x) == (20, 20))
        states.append(session.labels.copy())
    while session.can_undo:
        session.undo()
        session.predict()
        assert any(np.array_equal(session.labels, s) for s in states)
    np.testing.assert_array_equal(session.labels, states[0])
    while session.can_redo:
        session.redo()
    np.testing.assert_array_equal(session.labels, states[-1])


def test_committed_objects_do_not_keep_their_probability_maps(net):
    image = np.zeros((128, 128), np.uint8)
    s = SegmentationSession(image, predictor_factory=lambda: nobrs(net))
    sizes = []
    rng = np.random.default_rng(0)
    for i in range(40):
        s.add_click(*rng.uniform(5, 122, 2))
        s.predict()
        s.commit(overwrite=True)
        if i + 1 in (10, 40):
            sizes.append(held_bytes(s) - s.labels.nbytes)
    assert sizes[1] - sizes[0] < 10 * 128 * 128 * 4  # 30 more commits, < 10 maps more


def test_a_points_layer_style_mapping_of_another_ndim_is_refused(session):
    stack = SegmentationSession(np.zeros((3, H, W), np.uint8))
    with pytest.raises(ValueError, match="slice key needs 1 indices"):
        stack.set_all_clicks({(): [(1.0, 1.0, True)]})
    with pytest.raises(ValueError, match="slice key needs 0 indices"):
        session.set_all_clicks({(0, 1): [(1.0, 1.0, True)]})
    with pytest.raises(ValueError, match="outside the stack"):
        stack.set_all_clicks({(3,): [(1.0, 1.0, True)]})
    assert stack.all_clicks() == {} and session.all_clicks() == {}


# ================================================================================ widget

try:
    importlib.import_module("napari")
    importlib.import_module("pytestqt")
    HAVE_NAPARI = True
except ImportError:  # pragma: no cover
    HAVE_NAPARI = False

gui = pytest.mark.skipif(not HAVE_NAPARI, reason="napari and pytest-qt are not installed")


@pytest.fixture
def notes(monkeypatch):
    """The widget's notifications, as ``(kind, message)``."""
    from napari_fbrs._widget import notify

    seen: list[tuple[str, str]] = []
    for kind in ("error", "warning", "info"):
        monkeypatch.setattr(notify, kind, lambda m, k=kind: seen.append((k, m)))
    return seen


@pytest.fixture
def viewer(make_napari_viewer, monkeypatch, notes, no_opengl_queries):
    """An offscreen viewer with a 2D image ``img``; the widget predicts synchronously."""
    from napari_fbrs._widget import FbrsWidget

    monkeypatch.setattr(FbrsWidget, "synchronous", True)
    v = make_napari_viewer()
    v.add_image(np.random.default_rng(1).integers(0, 255, (H, W), dtype=np.uint8), name="img")
    return v


def open_widget(viewer, net):
    _, widget = viewer.window.add_plugin_dock_widget("napari-fbrs", "f-BRS")
    widget.set_model(net)
    widget.configure(mode="NoBRS", zoom_in=False, device="cpu", with_flip=False)
    return widget


@gui
def test_gui_the_image_layer_removed_mid_prediction(viewer, notes, net, monkeypatch):
    widget = open_widget(viewer, net)
    widget.add_click(10, 10)
    assert widget.finish_object() == 1
    original = Predictor.add_click

    def remove_image(self, y, x, positive=True):
        viewer.layers.remove("img")  # the user deletes the image while f-BRS runs
        return original(self, y, x, positive)

    monkeypatch.setattr(Predictor, "add_click", remove_image)
    widget.add_click(20, 24)
    assert [n for n in notes if n[0] == "error"] == []
    assert widget.session is None and "img" not in viewer.layers
    assert viewer.layers["fbrs objects"].data[10, 10] == 1  # committed work is kept
    monkeypatch.setattr(Predictor, "add_click", original)
    # a new image: the widget follows it and works
    viewer.add_image(np.zeros((H, W), np.uint8), name="img2")
    assert widget.session is not None and widget.add_click(20, 24)
    assert widget.current_mask[20, 24]


@gui
def test_gui_the_model_switched_mid_prediction(viewer, notes, net, monkeypatch):
    widget = open_widget(viewer, net)
    other = disk_net(radius=9.0)
    original = Predictor.add_click

    def switch(self, y, x, positive=True):
        widget.set_model(other)
        return original(self, y, x, positive)

    monkeypatch.setattr(Predictor, "add_click", switch)
    widget.add_click(20, 24)
    monkeypatch.setattr(Predictor, "add_click", original)
    assert [n for n in notes if n[0] == "error"] == []
    assert widget.predictor.net is net and widget.current_mask[20, 24]
    assert widget.finish_object() == 1
    widget.add_click(20, 24)
    assert widget.predictor.net is other


@gui
def test_gui_output_layers_removed_mid_prediction(viewer, notes, net, monkeypatch):
    widget = open_widget(viewer, net)
    original = Predictor.add_click

    def remove_layers(self, y, x, positive=True):
        for name in ("fbrs current", "fbrs clicks"):
            viewer.layers.remove(name)
        return original(self, y, x, positive)

    monkeypatch.setattr(Predictor, "add_click", remove_layers)
    widget.add_click(20, 24)
    monkeypatch.setattr(Predictor, "add_click", original)
    assert [n for n in notes if n[0] == "error"] == []
    assert widget.finish_object() == 1  # the layers come back, the object is committed
    assert viewer.layers["fbrs objects"].data[20, 24] == 1
    assert "fbrs clicks" in viewer.layers and "fbrs current" in viewer.layers


@gui
@pytest.mark.parametrize(
    "dtype, full, promoted", [(np.int8, 127, np.int16), (np.uint8, 255, np.uint16)]
)
def test_gui_a_labels_layer_that_cannot_hold_the_next_id(viewer, net, dtype, full, promoted):
    objects = viewer.add_labels(np.zeros((H, W), dtype), name="fbrs objects")
    objects.data[0, 0] = full
    widget = open_widget(viewer, net)
    widget.add_click(20, 24)
    assert widget.finish_object() == full + 1
    layer = viewer.layers["fbrs objects"]
    assert layer.data.dtype == promoted and layer.data[20, 24] == full + 1
    assert layer.data[0, 0] == full and layer.data.min() >= 0
    assert widget.undo()
    assert viewer.layers["fbrs objects"].data.dtype == dtype
    assert viewer.layers["fbrs objects"].data[20, 24] == 0


@gui
def test_gui_a_clicks_layer_of_another_ndim_is_left_alone(viewer, notes, net):
    mine = viewer.add_points(np.array([[1.0, 2.0, 3.0]]), ndim=3, name="fbrs clicks")
    widget = open_widget(viewer, net)
    assert widget.clicks_layer is not mine and widget.clicks_layer.ndim == 2
    np.testing.assert_array_equal(mine.data, [[1.0, 2.0, 3.0]])
    assert widget.add_click(20, 24) and widget.current_mask[20, 24]
    assert [n for n in notes if n[0] == "error"] == []


@gui
def test_gui_a_nan_point_in_a_stack_is_rejected_with_a_warning(viewer, notes, net):
    viewer.layers.remove("img")
    viewer.add_image(np.zeros((3, H, W), np.uint8), name="stack")
    widget = open_widget(viewer, net)
    points = widget.clicks_layer
    points.data = np.array([[1.0, 20.0, 24.0], [np.nan, 10.0, 10.0]])
    assert widget.session.clicks((1,)) == [SessionClick(20.0, 24.0, True)]
    assert any("outside" in m for k, m in notes if k == "warning")


@gui
def test_gui_points_off_the_image_are_removed_with_a_warning(viewer, notes, net):
    widget = open_widget(viewer, net)
    widget.clicks_layer.data = np.array([[20.0, 24.0], [-50.0, 3.0], [300.0, 400.0]])
    assert widget.session.clicks() == [SessionClick(20.0, 24.0, True)]
    assert ("warning", "f-BRS: 2 click(s) outside the image were removed.") in notes
    assert len(widget.clicks_layer.data) == 1 and widget.current_mask[20, 24]


@gui
def test_gui_out_of_memory_is_explained(viewer, notes, net, monkeypatch):
    widget = open_widget(viewer, net)

    def oom(self, y, x, positive=True):
        raise MemoryError()

    monkeypatch.setattr(Predictor, "add_click", oom)
    widget.add_click(20, 24)
    (error,) = [m for k, m in notes if k == "error"]
    assert "memory" in error.lower() and "longest side" in error.lower()


@gui
def test_gui_out_of_memory_keeps_every_layer(viewer, notes, net, monkeypatch):
    widget = open_widget(viewer, net)
    widget.add_click(20, 24)
    widget.finish_object()
    widget.add_click(10, 10)
    before = {
        n: np.array(viewer.layers[n].data, copy=True)
        for n in ("fbrs clicks", "fbrs current", "fbrs objects")
    }

    original = Predictor.add_click

    def oom(self, y, x, positive=True):
        raise MemoryError("Unable to allocate 16.0 GiB")

    monkeypatch.setattr(Predictor, "add_click", oom)
    widget.add_click(30, 40, positive=False)
    assert any("Unable to allocate" in m for k, m in notes if k == "error")
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data, err_msg=name)
    monkeypatch.setattr(Predictor, "add_click", original)
    assert widget.add_click(30, 40, positive=False) and not widget.busy


@gui
def test_gui_a_read_only_objects_layer_keeps_the_object(viewer, notes, net):
    data = np.zeros((H, W), np.uint32)
    data.flags.writeable = False
    viewer.add_labels(data, name="fbrs objects")
    widget = open_widget(viewer, net)
    widget.add_click(20, 24)
    assert widget.finish_object() is None
    assert any("read-only" in m for k, m in notes if k == "warning")
    assert widget.session.clicks() == [SessionClick(20.0, 24.0, True)]  # nothing lost
    assert not viewer.layers["fbrs objects"].data.any()
