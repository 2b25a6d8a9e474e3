"""Dataset readers: the benchmarks in ../shared, and small layouts written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fbrs.core.evaluation.datasets import (
    DatasetError,
    LabelImageDataset,
    MaskFolderDataset,
    SBDDataset,
    open_dataset,
    read_mask,
)


@pytest.fixture(scope="module")
def benchmarks(shared_dir: Path) -> Path:
    return shared_dir / "datasets"


def save_png(path: Path, array: np.ndarray, palette: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if palette is not None:
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette(palette)
    im.save(path)
    return path


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = value
    return m


# ------------------------------------------------------------------------------ ../shared
def test_grabcut_reader_on_shared_data(benchmarks):
    ds = open_dataset("grabcut", benchmarks)  # names are matched in any case
    assert ds.name == "GrabCut" and len(ds) == 50
    masks = sorted((benchmarks / "GrabCut" / "boundary_GT").iterdir())
    names = [e.image_path.stem for e in ds.entries]
    assert sorted(names) == sorted(p.stem for p in masks)
    with_band = without_band = None
    for i, name in enumerate(names):
        raw = np.asarray(Image.open(benchmarks / "GrabCut" / "boundary_GT" / f"{name}.bmp"))
        if with_band is None and (raw == 128).any():
            with_band = (i, raw)
        if without_band is None and not (raw == 128).any():
            without_band = (i, raw)
        if with_band and without_band:
            break
    i, raw = with_band
    s = ds[i]
    assert s.name == names[i] and s.image.ndim == 3 and s.image.shape[:2] == raw.shape
    np.testing.assert_array_equal(s.gt, raw == 255)
    np.testing.assert_array_equal(s.ignore, raw == 128)
    i, raw = without_band
    assert ds[i].ignore is None
    np.testing.assert_array_equal(ds[i].gt, raw == 255)


def test_coco_mval_reader_on_shared_data(benchmarks):
    ds = open_dataset("COCO_MVal", benchmarks)
    assert len(ds) == 800
    for i in (0, 799):
        s = ds[i]
        raw = np.asarray(Image.open(benchmarks / "COCO_MVal" / "gt" / f"{s.name}.png"))
        np.testing.assert_array_equal(s.gt, raw > 0)
        assert s.gt.any() and s.ignore is None and s.image.shape[:2] == s.gt.shape


def test_nuclei2d_label_image_one_object_per_label(benchmarks):
    image_path = benchmarks / "microscopy" / "nuclei2d_image.tif"
    labels_path = benchmarks / "microscopy" / "nuclei2d_labels.tif"
    labels = tifffile.imread(labels_path)
    ids = [int(i) for i in np.unique(labels) if i != 0]
    ds = open_dataset(str(image_path))  # the label image is found beside it
    assert isinstance(ds, LabelImageDataset) and ds.name == "nuclei2d"
    assert len(ds) == len(ids) == 125
    first, second = ds[0], ds[1]
    assert first.name == f"nuclei2d_image#{ids[0]}" and first.image.dtype == np.uint16
    np.testing.assert_array_equal(first.gt, labels == ids[0])
    np.testing.assert_array_equal(second.gt, labels == ids[1])
    assert first.image is second.image  # one image array for all its objects
    explicit = open_dataset(f"{image_path}+{labels_path}")
    assert len(explicit) == 125 and explicit[124].name == f"nuclei2d_image#{ids[-1]}"


def test_nuclei3d_stack_each_label_on_its_largest_plane(benchmarks):
    ds = open_dataset(str(benchmarks / "microscopy" / "nuclei3d_image.tif"))
    labels = tifffile.imread(benchmarks / "microscopy" / "nuclei3d_labels.tif")
    ids = [int(i) for i in np.unique(labels) if i != 0]
    assert len(ds) == len(ids) == 51
    seen = set()
    for k in (0, 25, 50):
        s = ds[k]
        label = int(s.name.split("#")[1].split("@")[0])
        plane = int(s.name.split("@z")[1])
        per_plane = [(labels[z] == label).sum() for z in range(labels.shape[0])]
        assert plane == int(np.argmax(per_plane))
        np.testing.assert_array_equal(s.gt, labels[plane] == label)
        assert s.image.shape == labels.shape[1:]
        seen.add(label)
    assert len(seen) == 3
    planes = [e.plane for e in ds.entries]
    assert planes == sorted(planes)


# ------------------------------------------------------------------------------ SBD
def write_sbd(root: Path) -> dict[str, np.ndarray]:
    from scipy.io import savemat

    inst = {
        "2008_000001": np.zeros((20, 30), np.uint8),
        "2008_000002": np.zeros((20, 30), np.uint8),
    }
    inst["2008_000001"][2:8, 3:10] = 1
    inst["2008_000001"][10:18, 15:28] = 2
    inst["2008_000002"][5:15, 5:15] = 1
    for i, (stem, seg) in enumerate(inst.items()):
        save_png(root / "img" / f"{stem}.jpg", rgb_image(20, 30, i))
        (root / "inst").mkdir(parents=True, exist_ok=True)
        gtinst = {
            "Segmentation": seg,
            "Boundaries": np.zeros((2, 1), object),
            "Categories": np.array([[15], [7]], np.uint8),
        }
        savemat(root / "inst" / f"{stem}.mat", {"GTinst": gtinst})
    (root / "val.txt").write_text("2008_000001\n")
    return inst


def test_sbd_reader_every_instance_separately(tmp_path):
    inst = write_sbd(tmp_path / "SBD")
    ds = open_dataset("SBD", tmp_path)
    assert isinstance(ds, SBDDataset) and len(ds) == 2  # val.txt lists one image
    samples = list(ds)
    assert [s.name for s in samples] == ["2008_000001#1", "2008_000001#2"]
    np.testing.assert_array_equal(samples[0].gt, inst["2008_000001"] == 1)
    np.testing.assert_array_equal(samples[1].gt, inst["2008_000001"] == 2)
    assert samples[0].image.shape == (20, 30, 3)
    # without a list file for the split, every .mat file is used
    everything = SBDDataset(tmp_path / "SBD", split="train")
    assert [s.name for s in everything] == ["2008_000001#1", "2008_000001#2", "2008_000002#1"]


def test_sbd_bad_files_are_dataset_errors(tmp_path):
    from scipy.io import savemat

    write_sbd(tmp_path / "SBD")
    savemat(tmp_path / "SBD" / "inst" / "2008_000001.mat", {"other": np.zeros(3)})
    with pytest.raises(DatasetError, match="GTinst"):
        len(SBDDataset(tmp_path / "SBD"))
    (tmp_path / "SBD" / "val.txt").write_text("2008_000009\n")
    with pytest.raises(DatasetError, match="2008_000009"):
        len(SBDDataset(tmp_path / "SBD"))
    with pytest.raises(DatasetError, match="folder not found"):
        SBDDataset(tmp_path / "nothing")


# ------------------------------------------------------------------------------ Berkeley, DAVIS
def test_berkeley_layout(tmp_path):
    root = tmp_path / "Berkeley"
    for i in range(2):
        save_png(root / "images" / f"{i:03d}.jpg", rgb_image(24, 32, i))
        mask = box_mask(24, 32, 2 + i, 12, 4, 20)
        mask[2 + i, 4:20] = 100  # a softer edge is still object: masks are binary
        save_png(root / "masks" / f"{i:03d}.png", mask)
    ds = open_dataset("Berkeley", tmp_path)
    assert ds.name == "Berkeley" and len(ds) == 2
    s = ds[1]
    assert s.name == "001" and s.ignore is None
    np.testing.assert_array_equal(s.gt, box_mask(24, 32, 3, 12, 4, 20) > 0)
    # the same folder opened by path reads as the benchmark, not as label images
    by_path = open_dataset(str(root))
    assert by_path.name == "Berkeley" and [x.name for x in by_path] == ["000", "001"]
    # elsewhere, the two grey levels would be two labelled objects
    (tmp_path / "Berkeley").rename(tmp_path / "mine")
    assert len(open_dataset(str(tmp_path / "mine"))) == 4


def test_davis_layout_with_palette_masks_read_as_colours(tmp_path):
    root = tmp_path / "DAVIS"
    save_png(root / "img" / "bear.jpg", rgb_image(20, 24))
    # palette index 0 is red (the object), index 1 black (background): the object is what
    # is not black, whatever the indices
    indices = np.ones((20, 24), np.uint8)
    indices[5:15, 6:18] = 0
    save_png(root / "gt" / "bear.png", indices, palette=[200, 0, 0, 0, 0, 0])
    assert read_mask(root / "gt" / "bear.png").max() == 1  # indices by default
    ds = open_dataset("DAVIS", tmp_path)
    np.testing.assert_array_equal(ds[0].gt, indices == 0)


def test_grey_palette_grabcut_mask_uses_grey_levels(tmp_path):
    root = tmp_path / "GrabCut"
    save_png(root / "data_GT" / "flower.jpg", rgb_image(16, 16))
    indices = np.zeros((16, 16), np.uint8)
    indices[4:12, 4:12] = 1  # the band
    indices[6:10, 6:10] = 2  # the object
    save_png(root / "boundary_GT" / "flower.bmp", indices, palette=[0] * 3 + [128] * 3 + [255] * 3)
    s = open_dataset("GrabCut", tmp_path)[0]
    np.testing.assert_array_equal(s.gt, indices == 2)
    np.testing.assert_array_equal(s.ignore, indices == 1)


# ------------------------------------------------------------------------------ generic
def make_generic(root: Path) -> np.ndarray:
    labels = np.zeros((30, 40), np.uint16)
    labels[2:10, 2:10] = 1
    labels[12:20, 5:15] = 7
    labels[22:28, 30:38] = 3
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    tifffile.imwrite(root / "images" / "cells.tif", np.full((30, 40), 100, np.uint16))
    tifffile.imwrite(root / "labels" / "cells_labels.tif", labels)
    save_png(root / "images" / "dish.png", rgb_image(30, 40))
    save_png(root / "labels" / "dish.png", box_mask(30, 40, 0, 10, 0, 10))
    save_png(root / "images" / "lonely.png", rgb_image(30, 40))
    return labels


def test_generic_folder_masks_and_label_images(tmp_path):
    labels = make_generic(tmp_path / "mydata")
    ds = open_dataset(str(tmp_path / "mydata"))
    assert isinstance(ds, MaskFolderDataset) and ds.name == "mydata"
    assert [s.name for s in ds] == ["cells#1", "cells#3", "cells#7", "dish"]
    assert [p.name for p in ds.unpaired] == ["lonely.png"]
    np.testing.assert_array_equal(ds[2].gt, labels == 7)
    assert ds[0].image is ds[1].image and ds[0].image.dtype == np.uint16
    np.testing.assert_array_equal(ds[3].gt, box_mask(30, 40, 0, 10, 0, 10) > 0)
    pair = open_dataset(f"{tmp_path / 'mydata' / 'images'}+{tmp_path / 'mydata' / 'labels'}")
    assert len(pair) == 4


def test_mask_of_another_size_or_without_object_is_an_error_on_access(tmp_path):
    root = tmp_path / "bad"
    save_png(root / "images" / "a.png", rgb_image(10, 12))
    save_png(root / "masks" / "a.png", box_mask(10, 10, 0, 5, 0, 5))
    save_png(root / "images" / "b.png", rgb_image(10, 12))
    save_png(root / "masks" / "b.png", np.zeros((10, 12), np.uint8))
    ds = MaskFolderDataset(root / "images", root / "masks")
    assert len(ds) == 2
    with pytest.raises(DatasetError, match="10x10"):
        ds[0]
    with pytest.raises(DatasetError, match="no object pixel"):
        ds[1]


@pytest.mark.parametrize(
    "spec, data_root, message",
    [
        ("GrabCut", None, "no data root"),
        ("DAVIS", "root", "datasets download DAVIS"),
        ("nowhere", "root", "neither a known dataset"),
        ("empty_dir", "root", "no images/masks sub-folders"),
        ("plain.png", "root", "no label image found"),
        ("plain.png+empty_dir", "root", r"IMAGE\+LABELS files"),
    ],
)
def test_open_dataset_errors_say_what_is_expected(tmp_path, monkeypatch, spec, data_root, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    (tmp_path / "empty_dir").mkdir()
    save_png(tmp_path / "plain.png", rgb_image(4, 4))
    with pytest.raises(DatasetError, match=message):
        open_dataset(spec, data_root)


def test_folder_without_matching_masks(tmp_path):
    save_png(tmp_path / "d" / "images" / "a.png", rgb_image(4, 4))
    save_png(tmp_path / "d" / "masks" / "b.png", box_mask(4, 4, 0, 2, 0, 2))
    with pytest.raises(DatasetError, match="same name"):
        len(open_dataset(str(tmp_path / "d")))


def test_label_stack_planes_all_gives_every_large_enough_cross_section(tmp_path):
    from napari_fbrs.core.training.data import TrainingData

    labels = np.zeros((4, 12, 12), np.uint16)
    labels[0, 0:2, 0:2] = 1  # 4 px: an out-of-focus tip
    labels[1, 0:5, 0:6] = 1  # 30 px: the largest plane of label 1
    labels[2, 0:4, 0:5] = 1  # 20 px
    labels[1, 6:11, 6:11] = 7  # 25 px, one plane only
    labels[3, 10:12, 10:12] = 9  # 4 px: its largest plane is kept whatever its size
    tifffile.imwrite(tmp_path / "s_labels.tif", labels, photometric="minisblack")
    tifffile.imwrite(
        tmp_path / "s_image.tif", np.zeros((4, 12, 12), np.uint16), photometric="minisblack"
    )
    spec = str(tmp_path / "s_image.tif")
    assert [(e.label, e.plane) for e in open_dataset(spec).entries] == [(1, 1), (7, 1), (9, 3)]
    every = open_dataset(spec, stack_planes="all")
    assert [(e.label, e.plane) for e in every.entries] == [(1, 1), (7, 1), (1, 2), (9, 3)]
    third = every[2]
    assert third.name == "s_image#1@z2" and third.gt.sum() == 20
    np.testing.assert_array_equal(third.gt, labels[2] == 1)
    pair = f"{tmp_path / 's_image.tif'}+{tmp_path / 's_labels.tif'}"
    assert len(open_dataset(pair, stack_planes="all")) == 4
    assert len(TrainingData([pair])) == 4  # training uses every plane
    with pytest.raises(ValueError, match="planes must be 'largest' or 'all', not 'some'"):
        LabelImageDataset(tmp_path / "s_image.tif", tmp_path / "s_labels.tif", planes="some")


def test_label_stack_must_fit_its_image(tmp_path):
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[1, 2:5, 2:5] = 4
    tifffile.imwrite(tmp_path / "s_labels.tif", labels, photometric="minisblack")
    tifffile.imwrite(
        tmp_path / "s_image.tif", np.zeros((3, 8, 9), np.uint8), photometric="minisblack"
    )
    ds = open_dataset(str(tmp_path / "s_image.tif"))
    assert [(e.label, e.plane) for e in ds.entries] == [(4, 1)]
    with pytest.raises(DatasetError, match="shape"):
        ds[0]
