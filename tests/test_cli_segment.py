"""``napari-fbrs segment``: clicks in, mask file out, and every user error as one line.

The tests use a checkpoint of the tiny test network made here (registry name ``tiny_test``),
so they do not depend on the bundled ``fbrs-lite`` weights; one test runs the bundled model
when its file is present.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fbrs.cli import UserError, main
from napari_fbrs.cli.segment import parse_click

PHOTO_SHAPE = (300, 450)
CUP = (110, 215)  # on the coffee cup of the sample photo
SAUCER = (245, 110)  # on the saucer
SPOON = (215, 265)  # on the spoon, below the cup
THRESHOLD = 0.49  # segment's default --thresh


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A ``tiny_test`` checkpoint whose masks cover part of the sample photo, not all of it.

    The untrained tiny net predicts about the same probability everywhere; shifting its
    output bias so that the median probability lands on the mask threshold puts about half
    of the pixels on each side of it, so the masks depend on the image and the clicks.
    """
    import torch

    import napari_fbrs as nf
    from napari_fbrs._sample_data import load_sample
    from napari_fbrs.core.testing import TinyNet

    net = TinyNet(seed=0)
    predictor = nf.Predictor(net, mode="NoBRS", device="cpu")
    predictor.set_image(load_sample("photo"))
    median = float(np.median(predictor.add_click(*CUP)))
    with torch.no_grad():
        net.out.bias -= _logit(median) - _logit(THRESHOLD)
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    torch.save({"arch": "tiny_test", "state_dict": net.state_dict()}, path)
    return path


def _segment(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["segment", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-fbrs segment: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _segment_clicks(capsys, tmp_path, image, text, *extra, out="l.tif"):
    """``segment IMAGE --clicks FILE`` with a clicks file holding ``text``."""
    clicks = tmp_path / "clicks.csv"
    clicks.write_text(text)
    return _segment(
        capsys, str(image), "--clicks", str(clicks), *extra, "--out", str(tmp_path / out)
    )


def _tiny_nobrs(checkpoint: Path) -> tuple[str, ...]:
    return ("--mode", "NoBRS", "--model", str(checkpoint))


def _labels_of_clicks(capsys, tmp_path, image, text, checkpoint, *extra):
    """``segment IMAGE --clicks FILE`` with the tiny network in NoBRS, which must succeed:
    the label image written and what was printed."""
    out = tmp_path / "labels.tif"
    code, stdout, err = _segment_clicks(
        capsys, tmp_path, image, text, *extra, *_tiny_nobrs(checkpoint), out=out.name
    )
    assert code == 0, err
    return tifffile.imread(out), stdout


def _api_mask(
    checkpoint: Path,
    image: np.ndarray,
    clicks,
    mode: str,
    first_click_crop="auto",
    beyond_border: bool = True,
    trim_overshoot: bool = False,
    min_crop: int = 200,
) -> np.ndarray:
    """The mask that the Python API gives for the same model, settings and clicks."""
    import napari_fbrs as nf

    net = nf.load_model(checkpoint, device="cpu")
    zoom = nf.ZoomIn(
        target_size=400,
        min_crop_size=min_crop,
        first_click_crop=first_click_crop,
        beyond_border=beyond_border,
    )
    predictor = nf.Predictor(
        net, mode=mode, device="cpu", with_flip=True, zoom_in=zoom, trim_overshoot=trim_overshoot
    )
    predictor.set_image(image)
    for y, x, positive in clicks:
        predictor.add_click(y, x, positive=positive)
    return predictor.mask


# ----------------------------------------------------------------------------- click syntax


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120,200", (120.0, 200.0, True)),
        ("+120,200", (120.0, 200.0, True)),
        ("-120,200", (120.0, 200.0, False)),
        (" 12.5 , 7 ", (12.5, 7.0, True)),
        ("-0,0", (0.0, 0.0, False)),
    ],
)
def test_parse_click_reads_row_column_and_sign(text, expected):
    assert parse_click(text) == expected


@pytest.mark.parametrize("text", ["", "12", "1;2", "1,2,3", "x,y", "-1,-2", "1e3,2", "--1,2"])
def test_parse_click_rejects_anything_else(text):
    with pytest.raises(UserError, match="bad click"):
        parse_click(text)


# ----------------------------------------------------------------------------- segmenting


def test_segment_writes_the_api_mask_and_reports_what_it_did(tiny_checkpoint, tmp_path, capsys):
    from napari_fbrs._sample_data import load_sample

    out = tmp_path / "mask.tif"
    code, stdout, err = _segment(
        capsys, "sample:photo", "--click", "110,215", "--click", "-245,110", "--mode", "NoBRS",
        "--model", str(tiny_checkpoint), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    mask = tifffile.imread(out)
    assert mask.shape == PHOTO_SHAPE and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    assert 0 < (mask > 0).mean() < 1

    clicks = [(*CUP, True), (*SAUCER, False)]
    expected = _api_mask(tiny_checkpoint, load_sample("photo"), clicks, "NoBRS")
    np.testing.assert_array_equal(mask > 0, expected)

    lines = stdout.splitlines()
    assert lines[0] == "image: sample:photo (300x450 RGB uint8)"
    assert lines[1].startswith("model: ") and "(tiny_test)" in lines[1]
    assert lines[2] == (
        "mode: NoBRS (flip on, zoom-in on, first-click crop auto, crops past the border, "
        "threshold 0.49)"
    )
    assert lines[3].startswith("click 1: positive at (y=110, x=215) in ")
    assert lines[4].startswith("click 2: negative at (y=245, x=110) in ")
    area = int((mask > 0).sum())
    assert f"mask {area} px" in lines[4]
    assert lines[5].startswith("time per click: ") and lines[5].endswith(" over 2 clicks")
    assert lines[6] == f"wrote {out} (300x450 uint8, 255 = object)"


def test_default_mode_and_negative_clicks_with_or_without_equals(tiny_checkpoint, tmp_path, capsys):
    masks = []
    for i, click_args in enumerate([["--click", "-245,110"], ["--click=-245,110"]]):
        out = tmp_path / f"mask{i}.png"
        code, stdout, err = _segment(
            capsys, "sample:photo", "--click", "110,215", *click_args,
            "--model", str(tiny_checkpoint), "--out", str(out),
        )  # fmt: skip
        assert code == 0, err
        assert (
            "mode: f-BRS-B (flip on, zoom-in on, first-click crop auto, crops past the border, "
            "threshold 0.49)" in stdout
        )
        assert "click 2: negative at (y=245, x=110)" in stdout
        masks.append(np.asarray(Image.open(out)))
    np.testing.assert_array_equal(masks[0], masks[1])
    assert masks[0].dtype == np.uint8 and masks[0].shape == PHOTO_SHAPE


def test_gt_reports_the_iou(tiny_checkpoint, tmp_path, capsys):
    first = tmp_path / "first.tif"
    common = ["sample:photo", "--click", "110,215", "--mode", "NoBRS"]
    common += ["--model", str(tiny_checkpoint)]
    assert _segment(capsys, *common, "--out", str(first))[0] == 0
    inverse = tmp_path / "inverse.png"
    Image.fromarray(np.where(tifffile.imread(first) > 0, 0, 255).astype(np.uint8)).save(inverse)

    code, stdout, _ = _segment(
        capsys, *common, "--out", str(tmp_path / "b.tif"), "--gt", str(first)
    )
    assert code == 0
    assert stdout.splitlines()[-1] == f"IoU with {first}: 1.0000"
    code, stdout, _ = _segment(
        capsys, *common, "--out", str(tmp_path / "c.tif"), "--gt", str(inverse)
    )
    assert code == 0
    assert stdout.splitlines()[-1] == f"IoU with {inverse}: 0.0000"


def test_grey_16_bit_sample_mode_in_any_case_and_new_output_folder(
    tiny_checkpoint, tmp_path, capsys
):
    out = tmp_path / "new" / "folder" / "nuclei.tif"
    code, stdout, err = _segment(
        capsys, "sample:nuclei", "--click", "100,100", "--mode", "nobrs", "--no-flip",
        "--no-zoom-in", "--model", str(tiny_checkpoint), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert stdout.splitlines()[0] == "image: sample:nuclei (256x256 gray uint16)"
    assert "mode: NoBRS (flip off, zoom-in off, threshold 0.49)" in stdout
    assert tifffile.imread(out).shape == (256, 256)


def test_an_image_file_is_read(tiny_checkpoint, tmp_path, capsys):
    image = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)).save(image)
    out = tmp_path / "m.tif"
    code, stdout, err = _segment(
        capsys, str(image), "--click", "20,30", "--mode", "NoBRS",
        "--model", str(tiny_checkpoint), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert stdout.splitlines()[0] == f"image: {image} (40x60 RGB uint8)"
    assert tifffile.imread(out).shape == (40, 60)


# ----------------------------------------------------------------------------- user errors


@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """An empty model cache, and a download that fails the test if it is attempted."""
    from napari_fbrs.core import zoo

    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("segment tried to download a checkpoint")

    monkeypatch.setattr(zoo, "download_checkpoint", refuse)


def test_no_click(tmp_path, capsys):
    code, _, err = _segment(capsys, "sample:photo", "--out", str(tmp_path / "m.tif"))
    _assert_user_error(code, err, "at least one click", "--click Y,X")


def test_click_outside_the_image(tmp_path, capsys):
    out = str(tmp_path / "m.tif")
    code, _, err = _segment(capsys, "sample:photo", "--click", "300,10", "--out", out)
    _assert_user_error(code, err, "(300, 10) is outside the image", "rows 0..299")


@pytest.mark.parametrize("name", ["mask.jpg", "mask"])
def test_output_must_be_tiff_or_png(tmp_path, capsys, name):
    code, _, err = _segment(capsys, "sample:photo", "--click", "1,1", "--out", str(tmp_path / name))
    _assert_user_error(code, err, "--out must end in .tif, .tiff or .png")


def test_output_that_is_a_folder(tmp_path, capsys):
    folder = tmp_path / "masks.tif"
    folder.mkdir()
    code, _, err = _segment(capsys, "sample:photo", "--click", "1,1", "--out", str(folder))
    _assert_user_error(code, err, "is a folder")


def test_a_stack_is_refused_with_a_pointer_to_the_widget(tmp_path, capsys):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 20, 30), np.uint16))
    code, _, err = _segment(capsys, str(stack), "--click", "1,1", "--out", str(tmp_path / "m.tif"))
    _assert_user_error(code, err, "(5, 20, 30)", "one 2D image", "napari widget")


def test_an_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    code, _, err = _segment(capsys, str(bad), "--click", "1,1", "--out", str(tmp_path / "m.tif"))
    _assert_user_error(code, err, "cannot read image", "broken.png")


def test_gt_of_another_size(tmp_path, capsys):
    gt = tmp_path / "gt.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(gt)
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,1", "--gt", str(gt), "--out", str(tmp_path / "m.tif")
    )
    _assert_user_error(code, err, "ground-truth mask is (10, 10)", "(300, 450)")


def test_missing_gt(tmp_path, capsys):
    code, _, err = _segment(
        capsys,
        "sample:photo",
        "--click",
        "1,1",
        "--gt",
        "nope.png",
        "--out",
        str(tmp_path / "m.tif"),
    )
    _assert_user_error(code, err, "ground-truth mask file not found", "nope.png")


def test_bad_mode_is_reported_before_any_download(no_downloads, tmp_path, capsys):
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,1", "--mode", "f-BRS-Z",
        "--model", "hrnet18_ocr64_sbd", "--out", str(tmp_path / "m.tif"),
    )  # fmt: skip
    _assert_user_error(code, err, "unknown mode 'f-BRS-Z'", "f-BRS-B", "NoBRS")


@pytest.mark.parametrize(
    ("crop", "border"), [("off", "beyond"), ("64", "beyond"), ("64", "no-beyond")]
)
def test_zoom_in_settings_are_the_apis(tiny_checkpoint, tmp_path, capsys, crop, border):
    from napari_fbrs._sample_data import load_sample

    out = tmp_path / "mask.tif"
    code, stdout, err = _segment(
        capsys, "sample:photo", "--click", "12,440", "--mode", "NoBRS",
        "--first-click-crop", crop, f"--{border}-border",
        "--model", str(tiny_checkpoint), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    where = "past" if border == "beyond" else "inside"
    assert f"zoom-in on, first-click crop {crop}, crops {where} the border, threshold" in stdout
    setting = None if crop == "off" else int(crop)
    expected = _api_mask(
        tiny_checkpoint, load_sample("photo"), [(12, 440, True)], "NoBRS", setting,
        beyond_border=border == "beyond",
    )  # fmt: skip
    if setting is not None:  # the first click's crop reaches past the corner, or not
        other = _api_mask(
            tiny_checkpoint, load_sample("photo"), [(12, 440, True)], "NoBRS", setting,
            beyond_border=border != "beyond",
        )  # fmt: skip
        assert not np.array_equal(expected, other)
    np.testing.assert_array_equal(tifffile.imread(out) > 0, expected)


def test_trim_overshoot_is_the_apis(tiny_checkpoint, tmp_path, capsys):
    from napari_fbrs._sample_data import load_sample

    out = tmp_path / "mask.tif"
    clicks = [(200, 300, True), (150, 250, False), (260, 330, True)]
    code, stdout, err = _segment(
        capsys, "sample:photo", *[a for y, x, pos in clicks
                                  for a in ("--click", f"{'+' if pos else '-'}{y},{x}")],
        "--mode", "f-BRS-B", "--trim-overshoot",
        "--model", str(tiny_checkpoint), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "corrections trimmed" in stdout
    expected = _api_mask(
        tiny_checkpoint, load_sample("photo"), clicks, "f-BRS-B", trim_overshoot=True
    )
    np.testing.assert_array_equal(tifffile.imread(out) > 0, expected)


def test_min_crop_is_the_apis(tiny_checkpoint, tmp_path, capsys):
    from napari_fbrs._sample_data import load_sample

    out = tmp_path / "mask.tif"
    clicks = [(150, 220, True), (140, 235, False), (165, 205, True)]
    args = [a for y, x, pos in clicks for a in ("--click", f"{'+' if pos else '-'}{y},{x}")]
    code, stdout, err = _segment(
        capsys, "sample:photo", *args, "--mode", "NoBRS", "--min-crop", "48",
        "--model", str(tiny_checkpoint), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "first-click crop auto, min crop 48, crops past the border" in stdout
    image = load_sample("photo")
    expected = _api_mask(tiny_checkpoint, image, clicks, "NoBRS", min_crop=48)
    np.testing.assert_array_equal(tifffile.imread(out) > 0, expected)
    assert not np.array_equal(expected, _api_mask(tiny_checkpoint, image, clicks, "NoBRS"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--min-crop", "4"], "--min-crop must be at least 8 pixels, not 4"),
        (["--min-crop", "64", "--no-zoom-in"], "--min-crop needs ZoomIn"),
        (["--first-click-crop", "big"], "must be a number of pixels, 'auto' or 'off', not 'big'"),
        (["--first-click-crop", "4"], "--first-click-crop must be at least 8 pixels, not 4"),
        (["--first-click-crop", "64", "--no-zoom-in"], "--first-click-crop needs ZoomIn"),
    ],
)
def test_bad_first_click_crop(no_downloads, tmp_path, capsys, extra, message):
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,1", *extra,
        "--model", "hrnet18_ocr64_sbd", "--out", str(tmp_path / "m.tif"),
    )  # fmt: skip
    _assert_user_error(code, err, message)


@pytest.mark.parametrize("thresh", ["0", "1", "1.5"])
def test_threshold_outside_zero_one(no_downloads, tmp_path, capsys, thresh):
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,1", "--thresh", thresh,
        "--model", "hrnet18_ocr64_sbd", "--out", str(tmp_path / "m.tif"),
    )  # fmt: skip
    _assert_user_error(code, err, "--thresh")


def test_unavailable_device_is_reported_before_any_download(no_downloads, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,1", "--device", "cuda",
        "--model", "hrnet18_ocr64_sbd", "--out", str(tmp_path / "m.tif"),
    )  # fmt: skip
    _assert_user_error(code, err, "cuda")


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00" * 64)
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,1", "--model", str(bad),
        "--out", str(tmp_path / "m.tif"),
    )  # fmt: skip
    _assert_user_error(code, err, "broken.pt")
    assert not (tmp_path / "m.tif").exists()


def test_missing_bundled_model_is_reported_plainly(monkeypatch, tmp_path, capsys):
    from napari_fbrs.core import zoo

    monkeypatch.setattr(zoo, "bundled_weights_path", lambda filename: tmp_path / filename)
    out = str(tmp_path / "m.tif")
    code, _, err = _segment(capsys, "sample:photo", "--click", "1,1", "--out", out)
    _assert_user_error(code, err, "fbrs-lite", "--model")
    assert not (tmp_path / "m.tif").exists()


# ----------------------------------------------------------------------------- bundled model


def _bundled_weights() -> Path:
    from napari_fbrs.core import zoo

    return zoo.bundled_weights_path(zoo.CHECKPOINTS[zoo.DEFAULT_MODEL].filename)


@pytest.mark.skipif(not _bundled_weights().is_file(), reason="the bundled weights are not here")
def test_the_bundled_model_segments_the_cup_of_the_sample_photo(tmp_path, capsys):
    out = tmp_path / "cup.tif"
    clicks = ["--click", "110,215", "--click", "-245,110", "--click", "-215,265"]
    code, stdout, err = _segment(capsys, "sample:photo", *clicks, "--out", str(out))  # README
    assert code == 0, err
    assert "model: fbrs-lite (fbrs_lite2, " in stdout
    mask = tifffile.imread(out) > 0
    assert mask[CUP] and not mask[SAUCER] and not mask[SPOON]
    assert 0.02 < mask.mean() < 0.6


# ------------------------------------------------------------------- many objects: --clicks


def test_clicks_file_segments_each_object_into_one_label_image(tiny_checkpoint, tmp_path, capsys):
    from napari_fbrs._sample_data import load_sample

    text = (
        "Object,Y,X,Positive\n"
        f"7,{SAUCER[0]},{SAUCER[1]},true\n"
        f"3,{CUP[0]},{CUP[1]},yes\n"
        f"3,{SAUCER[0]},{SAUCER[1]},0\n"
    )
    out = tmp_path / "labels.tif"
    code, stdout, err = _segment_clicks(
        capsys, tmp_path, "sample:photo", text, *_tiny_nobrs(tiny_checkpoint), out=out.name
    )
    assert code == 0, err
    labels = tifffile.imread(out)
    assert labels.shape == PHOTO_SHAPE and labels.dtype == np.uint8
    image = load_sample("photo")
    first = _api_mask(tiny_checkpoint, image, [(*SAUCER, True)], "NoBRS")
    second = _api_mask(tiny_checkpoint, image, [(*CUP, True), (*SAUCER, False)], "NoBRS")
    # objects in file order, ids from the object column; the later one only on background
    np.testing.assert_array_equal(labels == 7, first)
    np.testing.assert_array_equal(labels == 3, second & ~first)
    assert set(np.unique(labels)) <= {0, 3, 7}
    lines = stdout.splitlines()
    assert lines[3].startswith("object 7 -> id 7: 1 click in ")
    assert lines[4].startswith("object 3 -> id 3: 2 clicks in ")
    assert f"{int((labels == 3).sum())} px" in lines[4]
    assert lines[5].startswith("2 of 2 objects written; ")
    assert lines[6] == f"wrote {out} (300x450 uint8 labels, 0 = background)"


@pytest.mark.parametrize("sep", [";", "\t"])
def test_clicks_files_separated_by_semicolons_or_tabs(tmp_path, sep):
    from napari_fbrs.core.clicks_file import read_clicks_file

    rows = [["Object", "Y", "X", "Positive"], ["a", "1.5", "2", "no"], ["a", "3", "4", "yes"]]
    path = tmp_path / "clicks.csv"  # with a byte-order mark, as spreadsheets write it
    path.write_text("\ufeff" + "".join(sep.join(r) + "\n" for r in rows), encoding="utf-8")
    (obj,) = read_clicks_file(path)
    assert obj.name == "a" and obj.clicks == (((), 1.5, 2.0, False), ((), 3.0, 4.0, True))


def test_napari_points_csv_gives_one_object_per_point(tiny_checkpoint, tmp_path, capsys):
    text = f"index,axis-0,axis-1\n0,{CUP[0]},{CUP[1]}\n1,{SAUCER[0]},{SAUCER[1]}\n"  # napari's
    out = tmp_path / "labels.tiff"
    code, stdout, err = _segment_clicks(
        capsys, tmp_path, "sample:photo", text, *_tiny_nobrs(tiny_checkpoint), out=out.name
    )
    assert code == 0, err
    labels = tifffile.imread(out)
    assert labels[CUP] == 1 and set(np.unique(labels)) <= {0, 1, 2}
    assert "object line 2 -> id 1" in stdout and "object line 3 -> id 2" in stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("y,x\n", "holds no clicks"),
        ("row,col\n1,2\n", "no y and x columns"),
        ("y,x\n1,two\n", "line 2: y and x must be numbers"),
        ("y,x\n1,nan\n", "line 2: y and x must be finite"),
        ("y,x,positive\n1,2,maybe\n", "line 2: positive must be true or false"),
        ("y,x,object\n1,2\n", "line 2: the row has only 2 values"),
        ("y,x,object,positive\n1,2,a,no\n", "object 'a' has no positive click"),
        ("y,x\n1,2\n400,3\n", "click (400, 3) is outside the image"),
        ("y,x\n-3,2\n", "click (-3, 2) is outside the image"),
    ],
)
def test_bad_clicks_files_are_reported_by_line(no_downloads, tmp_path, capsys, text, message):
    code, _, err = _segment_clicks(capsys, tmp_path, "sample:photo", text)
    _assert_user_error(code, err, message)
    assert not (tmp_path / "l.tif").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--click", "1,2"], "either with --click or in a --clicks file"),
        (["--gt", "gt.png"], "does not go with --clicks"),
    ],
)
def test_clicks_file_option_conflicts(no_downloads, tmp_path, capsys, extra, message):
    code, _, err = _segment_clicks(capsys, tmp_path, "sample:photo", "y,x\n1,2\n", *extra)
    _assert_user_error(code, err, message)


def test_clicks_file_needs_a_tiff_label_image_and_an_existing_file(no_downloads, tmp_path, capsys):
    code, _, err = _segment_clicks(capsys, tmp_path, "sample:photo", "y,x\n1,2\n", out="l.png")
    _assert_user_error(code, err, "a label image: .tif or .tiff")
    code, _, err = _segment(
        capsys, "sample:photo", "--clicks", str(tmp_path / "nope.csv"), "--out", "l.tif"
    )
    _assert_user_error(code, err, "clicks file not found")


def _grey_stack(tmp_path, *slices: int):
    """The sample photo's green channel repeated over ``slices`` leading axes (default 3)."""
    from napari_fbrs._sample_data import load_sample

    grey = load_sample("photo")[..., 1]
    path = tmp_path / "stack.tif"
    stack = np.broadcast_to(grey, (*(slices or (3,)), *grey.shape))
    tifffile.imwrite(path, stack, photometric="minisblack")
    return path, grey


def test_clicks_file_on_a_stack_writes_each_object_on_its_slices(tiny_checkpoint, tmp_path, capsys):
    path, grey = _grey_stack(tmp_path)
    text = f"object,z,y,x\na,1,{CUP[0]},{CUP[1]}\na,2,{CUP[0]},{CUP[1]}\n"
    labels, stdout = _labels_of_clicks(capsys, tmp_path, path, text, tiny_checkpoint)
    assert labels.shape == (3, *PHOTO_SHAPE)
    expected = _api_mask(tiny_checkpoint, grey, [(*CUP, True)], "NoBRS")
    assert not labels[0].any()  # no click there, no propagation
    for z in (1, 2):  # one object, the same id on both slices
        np.testing.assert_array_equal(labels[z] == 1, expected)
    assert stdout.splitlines()[0] == f"image: {path} (3 slices of 300x450 gray uint8)"
    assert "object a -> id 1: 2 clicks in " in stdout


def test_propagate_carries_each_object_through_the_stack(tiny_checkpoint, tmp_path, capsys):
    path, grey = _grey_stack(tmp_path, 5)
    text = f"index,axis-0,axis-1,axis-2\n0,2,{CUP[0]},{CUP[1]}\n"  # napari's 3D points: z, y, x
    labels, stdout = _labels_of_clicks(
        capsys, tmp_path, path, text, tiny_checkpoint, "--propagate", "--stop-iou", "0.3"
    )
    expected = _api_mask(tiny_checkpoint, grey, [(*CUP, True)], "NoBRS")
    np.testing.assert_array_equal(labels[2] == 1, expected)  # the clicked slice as clicked
    reached = int((labels == 1).any(axis=(1, 2)).sum())
    assert reached > 1 and f"on {reached} slices" in stdout
    assert f"{int((labels == 1).sum())} px" in stdout


def test_a_propagate_column_carries_only_its_objects(tiny_checkpoint, tmp_path, capsys):
    # as the widget's Save objects writes it: object 4 was propagated, object 9 was not
    path, grey = _grey_stack(tmp_path, 5)
    text = (
        "object,z,y,x,positive,propagate\n"
        f"4,2,{CUP[0]},{CUP[1]},true,true\n"
        f"9,0,{SAUCER[0]},{SAUCER[1]},true,false\n"
    )
    labels, stdout = _labels_of_clicks(
        capsys, tmp_path, path, text, tiny_checkpoint, "--stop-iou", "0.3"
    )
    reached = int((labels == 4).any(axis=(1, 2)).sum())
    assert reached > 1 and f"on {reached} slices" in stdout
    np.testing.assert_array_equal(
        (labels == 4)[2], _api_mask(tiny_checkpoint, grey, [(*CUP, True)], "NoBRS")
    )
    assert (labels == 9).any(axis=(1, 2)).tolist() == [True, False, False, False, False]
    code, _, err = _segment_clicks(capsys, tmp_path, path, "z,y,x,propagate\n0,1,2,maybe\n")
    _assert_user_error(code, err, "line 2: propagate must be true or false, got 'maybe'")
    code, _, err = _segment_clicks(capsys, tmp_path, "sample:photo", "y,x,propagate\n1,2,yes\n")
    _assert_user_error(code, err, "the propagate column of")


def test_a_stack_with_two_slice_axes_takes_one_column_per_axis(tiny_checkpoint, tmp_path, capsys):
    path, grey = _grey_stack(tmp_path, 4, 2)
    text = f"object,axis-0,axis-1,y,x\na,2,1,{CUP[0]},{CUP[1]}\n"
    labels, stdout = _labels_of_clicks(capsys, tmp_path, path, text, tiny_checkpoint)
    assert labels.shape == (4, 2, *PHOTO_SHAPE)
    expected = _api_mask(tiny_checkpoint, grey, [(*CUP, True)], "NoBRS")
    np.testing.assert_array_equal(labels[2, 1] == 1, expected)
    assert (labels != 0).any(axis=(2, 3)).sum() == 1  # that slice only
    assert stdout.splitlines()[0] == f"image: {path} (4 x 2 slices of 300x450 gray uint8)"
    code, _, err = _segment_clicks(capsys, tmp_path, path, f"z,y,x\n1,{CUP[0]},{CUP[1]}\n")
    _assert_user_error(code, err, "stack of 4 x 2 slices", "columns axis-0, axis-1")
    code, _, err = _segment_clicks(capsys, tmp_path, path, "axis-0,axis-1,y,x\n4,0,1,2\n")
    _assert_user_error(code, err, "the stack has slices 0..3, 0..1")
    two_channels = tmp_path / "zc.tif"
    tifffile.imwrite(two_channels, np.zeros((3, 20, 30, 2), np.uint16), photometric="minisblack")
    code, _, err = _segment_clicks(capsys, tmp_path, two_channels, "z,y,x\n0,1,2\n")
    _assert_user_error(code, err, "(3, 20, 30, 2)", "napari widget")


def test_a_propagation_follows_the_files_axis_direction_and_stop_slices(
    tiny_checkpoint, tmp_path, capsys
):
    # as the panel writes it: walked along t (axis 0) from t = 1, forward, not into t = 3
    path, grey = _grey_stack(tmp_path, 4, 2)
    header = "object,axis-0,axis-1,y,x,positive,propagate,propagate_axis,direction,stop_iou,"
    text = (
        header + "regrowth,min_contrast,stop_slices\n"
        f"4,1,1,{CUP[0]},{CUP[1]},true,true,0,forward,0.2,,,3\n"
    )
    labels, stdout = _labels_of_clicks(capsys, tmp_path, path, text, tiny_checkpoint)
    on = (labels == 4).any(axis=(2, 3))
    assert on.tolist() == [[False, False], [False, True], [False, True], [False, False]]
    np.testing.assert_array_equal(
        labels[1, 1] == 4, _api_mask(tiny_checkpoint, grey, [(*CUP, True)], "NoBRS")
    )
    assert "on 2 slices" in stdout
    # without the file's settings: the last axis (z), both ways
    plain = f"object,axis-0,axis-1,y,x,propagate\n4,1,1,{CUP[0]},{CUP[1]},true\n"
    labels, _ = _labels_of_clicks(
        capsys, tmp_path, path, plain, tiny_checkpoint, "--stop-iou", "0.2"
    )
    on = (labels == 4).any(axis=(2, 3))
    assert on.tolist() == [[False, False], [True, True], [False, False], [False, False]]
    bad = text.replace(",0,forward,", ",2,forward,")
    code, _, err = _segment_clicks(capsys, tmp_path, path, bad)
    _assert_user_error(code, err, "object 4: propagate_axis 2 is not a slice axis")


def test_command_line_stop_rules_apply_to_every_object_over_the_files():
    import argparse

    from napari_fbrs.cli.segment_objects import _propagation
    from napari_fbrs.core.clicks_file import ObjectClicks, PropagationSettings
    from napari_fbrs.core.session.propagation import CONVEX_REGROWTH

    given = ObjectClicks("1", (((0,), 1.0, 2.0, True),), True, PropagationSettings(
        direction=-1, stop_iou=0.7, regrowth=0.3, min_contrast=0.6, stop_slices=(4,)
    ))  # fmt: skip
    unset = ObjectClicks("2", (((0,), 1.0, 2.0, True),), True)
    none = argparse.Namespace(stop_iou=None, convex=False, min_contrast=None)
    every = argparse.Namespace(stop_iou=0.3, convex=True, min_contrast=0.9)
    assert _propagation(given, none) == {
        "axis": None, "direction": -1, "stop_iou": 0.7, "stop_slices": (4,),
        "regrowth": 0.3, "min_contrast": 0.6,
    }  # fmt: skip
    assert _propagation(unset, none) == {
        "axis": None, "direction": 0, "stop_iou": 0.5, "stop_slices": (),
        "regrowth": None, "min_contrast": None,
    }  # fmt: skip
    never = ObjectClicks("3", (((0,), 1.0, 2.0, True),), True, PropagationSettings(stop_iou=0.0))
    assert _propagation(never, none)["stop_iou"] == 0.0  # the panel's "never stop on IoU"
    for obj in (given, unset):
        chosen = _propagation(obj, every)
        assert (chosen["stop_iou"], chosen["regrowth"], chosen["min_contrast"]) == (
            0.3, CONVEX_REGROWTH, 0.9,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        ("y,x\n1,2\n", [], "the image is a stack of 3 slices: give the slice"),
        ("z,y,x\n3,1,2\n", [], "the stack has slices 0..2"),
        ("z,y,x\n1.5,1,2\n", [], "z must be a slice index"),
        ("object,z,y,x\na,0,1,2\na,1,1,2\n", ["--propagate"], "clicks on several slices"),
        ("z,y,x\n0,1,2\n", ["--convex"], "go with --propagate"),
        ("z,y,x\n0,1,2\n", ["--propagate", "--stop-iou", "1.5"], "--stop-iou must lie"),
        ("z,y,x\n0,1,2\n", ["--propagate", "--min-contrast", "0"], "--min-contrast must lie"),
    ],
)
def test_bad_stack_clicks_are_reported(no_downloads, tmp_path, capsys, text, extra, message):
    path, _ = _grey_stack(tmp_path)
    code, _, err = _segment_clicks(capsys, tmp_path, path, text, *extra)
    _assert_user_error(code, err, message)


def test_z_column_on_a_2d_image_and_propagate_without_a_stack(no_downloads, tmp_path, capsys):
    code, _, err = _segment_clicks(capsys, tmp_path, "sample:photo", "z,y,x\n0,1,2\n")
    _assert_user_error(code, err, "the image is 2D")
    code, _, err = _segment_clicks(capsys, tmp_path, "sample:photo", "y,x\n1,2\n", "--propagate")
    _assert_user_error(code, err, "--propagate needs a stack")
    code, _, err = _segment(
        capsys, "sample:photo", "--click", "1,2", "--propagate", "--out", "l.tif"
    )
    _assert_user_error(code, err, "--propagate goes with a --clicks file")
