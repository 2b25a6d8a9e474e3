"""napari_fbrs.core.labels_file: saving finished objects to TIFF."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_fbrs.core.labels_file import save_labels

tifffile = pytest.importorskip("tifffile")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.uint32, np.int64])
@pytest.mark.parametrize("shape", [(5, 7), (2, 5, 7), (2, 3, 5, 7)])
def test_labels_round_trip_with_their_dtype_and_shape(tmp_path, dtype, shape):
    labels = (np.arange(np.prod(shape)).reshape(shape) % 5).astype(dtype)
    labels.flat[-1] = np.iinfo(dtype).max  # the dtype's whole range is kept
    path = save_labels(labels, tmp_path / "deep" / "objects.tif")
    assert path == tmp_path / "deep" / "objects.tif"
    back = tifffile.imread(path)
    assert back.dtype == labels.dtype and back.shape == shape
    np.testing.assert_array_equal(back, labels)
    assert os.listdir(path.parent) == ["objects.tif"]  # no temporary file left


def test_bool_masks_are_stored_as_uint8(tmp_path):
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    back = tifffile.imread(save_labels(mask, tmp_path / "m.TIFF"))
    assert back.dtype == np.uint8 and back.sum() == 6


@pytest.mark.parametrize(
    ("labels", "name", "message"),
    [
        (np.zeros((4, 4), np.float32), "x.tif", "integer array with at least two axes"),
        (np.zeros(4, np.int32), "x.tif", r"got int32 of shape \(4,\)"),
        (np.zeros((4, 4), np.int32), "x.png", r"TIFF files \(.tif or .tiff\); got 'x.png'"),
        (np.zeros((4, 4), np.int32), "x", "got 'x'"),
    ],
)
def test_bad_labels_or_names_are_refused(tmp_path, labels, name, message):
    with pytest.raises(ValueError, match=message):
        save_labels(labels, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_the_existing_file_as_it_was(tmp_path, monkeypatch):
    path = save_labels(np.ones((4, 4), np.uint8), tmp_path / "objects.tif")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        save_labels(np.full((4, 4), 7, np.uint8), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["objects.tif"]


def test_it_is_public_as_nf_save_labels(tmp_path):
    import napari_fbrs as nf

    assert nf.save_labels is save_labels
    labels = np.array([[0, 3], [3, 0]], np.uint16)
    np.testing.assert_array_equal(
        tifffile.imread(nf.save_labels(labels, tmp_path / "o.tif")), labels
    )
