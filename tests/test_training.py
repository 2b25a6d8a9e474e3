"""Training of the bundled model: loss, simulated clicks, augmentation, loop, export, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_fbrs.core.training.augment import augment
from napari_fbrs.core.training.clicks_sim import IGNORE, error_click, initial_clicks
from napari_fbrs.core.training.loss import normalized_focal_loss
from napari_fbrs.core.training.synthetic import synthetic_sample


def _square_target(size=48, lo=12, hi=36):
    t = np.zeros((size, size), np.uint8)
    t[lo:hi, lo:hi] = 1
    return t


# -- loss ----------------------------------------------------------------------------------
def test_focal_loss_small_when_right_large_when_wrong():
    target = torch.from_numpy(_square_target()).float().view(1, 1, 48, 48)
    right = (target * 2 - 1) * 8
    assert normalized_focal_loss(right, target) < 1e-3
    assert normalized_focal_loss(-right, target) > 1.0


def test_focal_loss_ignores_invalid_pixels():
    target = torch.from_numpy(_square_target()).float().view(1, 1, 48, 48)
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[..., :5, :] = False
    logits = (target * 2 - 1) * 3
    worse = logits.clone()
    worse[..., :5, :] = 50.0  # confidently wrong, but only where ignored
    a = normalized_focal_loss(logits, target, valid)
    b = normalized_focal_loss(worse, target, valid)
    torch.testing.assert_close(a, b)


# -- simulated clicks ----------------------------------------------------------------------
def test_initial_clicks_fall_on_the_right_side():
    target = _square_target()
    target[:, :4] = IGNORE
    for seed in range(20):
        clicks = initial_clicks(target, np.random.default_rng(seed))
        assert clicks[0].positive
        for c in clicks:
            assert target[int(c.y), int(c.x)] == (1 if c.positive else 0)


def test_initial_clicks_need_an_object():
    with pytest.raises(ValueError, match="no object"):
        initial_clicks(np.zeros((8, 8), np.uint8), np.random.default_rng(0))


def test_error_click_polarity_and_perfect_prediction():
    target = _square_target()
    rng = np.random.default_rng(0)
    missed = error_click(np.zeros_like(target, bool), target, rng)
    assert missed.positive and target[int(missed.y), int(missed.x)] == 1
    leak = target == 1
    leak[:, 40:] = True
    c = error_click(leak, target, rng)
    assert not c.positive and c.x >= 40
    assert error_click(target == 1, target, rng) is None
    ignored = target.copy()
    ignored[:, 40:] = IGNORE  # a leak onto ignored pixels is no error
    assert error_click(leak, ignored, rng) is None


def test_batched_error_clicks_match_the_exact_ones():
    from napari_fbrs.core.training.loop import _append_clicks, error_clicks_torch

    target = torch.from_numpy(np.stack([_square_target()] * 3))
    pred = torch.zeros(3, 48, 48, dtype=torch.bool)
    pred[1] = target[1] == 1
    pred[1, :, 40:] = True  # leak on the right
    pred[2] = target[2] == 1  # perfect
    yx, positive, has_error = error_clicks_torch(pred, target, torch.Generator().manual_seed(0))
    assert has_error.tolist() == [True, True, False]
    assert positive[:2].tolist() == [True, False]
    y0, x0 = yx[0].tolist()
    assert 18 <= y0 <= 29 and 18 <= x0 <= 29  # deep inside the missed square
    assert yx[1, 1] >= 40
    pos = torch.full((3, 2, 2), -1.0)
    neg = torch.full((3, 2, 2), -1.0)
    pos[:, 0] = 1.0
    _append_clicks(pos, neg, yx, positive, has_error)
    assert pos[0, 1].tolist() == yx[0].tolist() and neg[1, 0].tolist() == yx[1].tolist()
    assert (pos[2, 1] == -1).all() and (neg[2] == -1).all()


# -- data ----------------------------------------------------------------------------------
def test_augment_output_shapes_and_values():
    rng = np.random.default_rng(3)
    image = rng.random((90, 70, 3)).astype(np.float32)
    target = np.zeros((90, 70), np.uint8)
    target[30:60, 20:50] = 1
    target[0:3] = IGNORE
    for k in range(10):
        source = image if k % 2 else (image * 255).astype(np.uint8)
        img, tgt = augment(source, target, 64, rng)
        assert img.shape == (64, 64, 3) and img.dtype == np.float32
        assert tgt.shape == (64, 64) and set(np.unique(tgt)) <= {0, 1, IGNORE}
        assert 0.0 <= img.min() and img.max() <= 1.0
        assert (tgt == 1).any()


@pytest.mark.parametrize("factor", [0.3, 1.0, 2.7])
def test_scaled_window_keeps_image_and_target_aligned(factor):
    from napari_fbrs.core.training.augment import scaled_window

    rng = np.random.default_rng(7)
    target = np.zeros((120, 90), np.uint8)
    target[40:100, 10:70] = 1
    target[0:5] = IGNORE
    image = np.repeat((target == 1)[..., None] * np.uint8(255), 3, axis=2)
    for _ in range(5):
        img, tgt = scaled_window(image, target, 48, factor, rng)
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and tgt.shape == (48, 48)
        assert (tgt == 1).any()  # the window is placed around an object pixel
        valid = tgt != IGNORE
        bright = img[..., 0] >= 128
        # bilinear image against nearest target: they may differ on a one-pixel boundary only
        assert (bright != (tgt == 1))[valid].mean() < 0.06
        if factor < 0.5:  # the window is larger than the image: padding is ignored and black
            assert (~valid).sum() > 48 * 48 * 0.2
            assert (img[tgt == IGNORE] == 0).mean() > 0.9


class _LowestRng:
    """Stands in for numpy's Generator: the first object pixel, the lowest window start."""

    def integers(self, n):
        return 0

    def uniform(self, lo, hi):
        return lo

    def random(self):
        return 0.0


def test_mirrored_window_shows_the_image_mirrored_past_the_border():
    from napari_fbrs.core.training.augment import scaled_window

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    target = np.zeros((40, 50), np.uint8)
    target[0:5, 0:5] = 1
    # factor 1 and the object pixel (0, 0) at the window's far corner: the window spans
    # rows and columns -63..0, all but one pixel past the top-left border
    img, tgt = scaled_window(image, target, 64, 1.0, _LowestRng(), mirror=True)
    mirrored = np.pad(image, ((63, 0), (63, 0), (0, 0)), mode="reflect")[:64, :64]
    np.testing.assert_array_equal(img, mirrored)
    assert tgt[63, 63] == 1 and (tgt[:63] == IGNORE).all() and (tgt[:, :63] == IGNORE).all()
    # without mirror the same window lies inside the image, as before
    img, tgt = scaled_window(image, target, 64, 1.0, _LowestRng())
    assert (tgt == IGNORE).sum() == 64 * 64 - 40 * 50 and (img[tgt == IGNORE] == 0).all()


def test_border_mirror_in_augment_and_training_data():
    from napari_fbrs.core.training.augment import augment
    from napari_fbrs.core.training.data import TrainingData

    image = np.full((60, 80, 3), 200, np.uint8)
    target = np.zeros((60, 80), np.uint8)
    target[0:12, 30:50] = 1  # an object cut by the top border
    past, filled = 0, 0
    for k in range(40):
        img, tgt = augment(image, target, 48, np.random.default_rng(k), border_mirror=1.0)
        outside = tgt == IGNORE
        past += outside.any()
        filled += outside.any() and img[outside].min() > 0.3  # mirrored grey, never black
    assert past >= 10 and filled == past
    # no draw is spent at 0: the random stream, hence the samples, are as without it
    for k in range(5):
        a = augment(image, target, 48, np.random.default_rng(k))
        b = augment(image, target, 48, np.random.default_rng(k), border_mirror=0.0)
        np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match=r"border_mirror is a probability in \[0, 1\], not 2"):
        TrainingData([], synthetic=2, border_mirror=2)


def test_synthetic_scenes_are_reproducible():
    a = synthetic_sample(np.random.default_rng(5), (64, 80))
    b = synthetic_sample(np.random.default_rng(5), (64, 80))
    assert a[0].shape == (64, 80, 3) and a[1].shape == (64, 80) and a[1].any()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("kind", ["shapes", "cells", "stack"])
def test_synthetic_scene_kinds(kind):
    from napari_fbrs.core.training.synthetic import synthetic_scene

    image, labels = synthetic_scene(np.random.default_rng(3), (96, 112), kind)
    again = synthetic_scene(np.random.default_rng(3), (96, 112), kind)
    assert image.shape == (96, 112, 3) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    assert labels.shape == (96, 112) and np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, again[1])
    assert len(np.unique(labels)) >= 3  # crowded scenes: several objects
    if kind != "shapes":  # fluorescence: the objects are brighter than the background
        grey = image.max(axis=2)
        assert grey[labels > 0].mean() > grey[labels == 0].mean() + 0.1


def test_stack_scenes_have_small_faint_nucleus_ends():
    """Slices cut some nuclei near their ends: the cross-sections vary widely in area."""
    from napari_fbrs.core.training.synthetic import synthetic_scene

    areas = []
    for i in range(6):
        _, labels = synthetic_scene(np.random.default_rng([11, i]), (128, 128), "stack")
        counts = np.bincount(labels.ravel())[1:]
        areas += list(counts[counts > 0])
    assert np.percentile(areas, 90) > 4 * np.percentile(areas, 10)


def test_synthetic_scene_rejects_unknown_kind():
    from napari_fbrs.core.training.synthetic import synthetic_scene

    with pytest.raises(ValueError, match="kind must be one of 'shapes', 'cells', 'stack'"):
        synthetic_scene(np.random.default_rng(0), (32, 32), "blobs")


def test_samples_do_not_depend_on_loader_order():
    from napari_fbrs.core.training.data import TrainingData
    from napari_fbrs.core.training.loop import _Samples

    data = TrainingData([], synthetic=4, seed=1)
    cfg = {"batch_size": 2, "crop": 48, "seed": 1}
    late = _Samples(data, cfg)[5]
    _Samples(data, cfg)[0]
    again = _Samples(data, cfg)[5]
    for x, y in zip(late, again, strict=True):
        torch.testing.assert_close(x, y)
    assert late[0].shape == (3, 48, 48) and late[2].shape == (3, 2)
    assert late[2][0, 0] >= 0  # at least one positive click


def _disk_sample(size, cy, cx, r, colour):
    yy, xx = np.mgrid[:size, :size]
    target = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8)
    image = np.full((size, size, 3), 0.2, np.float32)
    image[target == 1] = colour
    return image, target


def test_transplant_keeps_the_object_on_a_new_background():
    from napari_fbrs.core.training.paste import transplant

    image, target = _disk_sample(64, 20, 20, 8, (1.0, 0.0, 0.0))
    background = np.full((64, 64, 3), 0.5, np.float32)
    background[:, :, 2] = 0.9
    bg_target = np.zeros((64, 64), np.uint8)
    bg_target[40:, 40:] = 1  # the other sample's object: background now
    bg_target[:, :4] = IGNORE  # its padding stays ignored
    out, tgt = transplant(image, target, background, bg_target, np.random.default_rng(0))
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(tgt[target == 1], 1)
    assert set(np.unique(tgt)) == {0, 1, IGNORE}
    assert (tgt[:, :4] == IGNORE).all() and (tgt[50, 50] == 0)
    # object pixels away from the edge keep their colour; far background is the new image
    np.testing.assert_allclose(out[20, 20], (1.0, 0.0, 0.0), atol=1e-3)
    np.testing.assert_allclose(out[50, 10], (0.5, 0.5, 0.9), atol=1e-3)
    # a feathered edge: some pixels at the object's border are a blend of both
    edge = out[20, 10:14, 0]
    assert ((edge > 0.55) & (edge < 0.95)).any()


def test_occluder_hides_part_of_the_object_and_leaves_enough():
    from napari_fbrs.core.training.paste import MIN_VISIBLE, occlude

    image, target = _disk_sample(64, 32, 32, 14, (1.0, 0.0, 0.0))
    occluder, occ_target = _disk_sample(64, 10, 10, 6, (0.0, 1.0, 0.0))
    rng = np.random.default_rng(1)
    for _ in range(10):
        result = occlude(image, target, occluder, occ_target, rng)
        assert result is not None
        out, tgt = result
        visible = int((tgt == 1).sum())
        assert MIN_VISIBLE * target.sum() <= visible < target.sum()  # part hidden
        assert not ((tgt == 1) & (target == 0)).any()  # nothing added to the object
        green = out[..., 1] > 0.9
        assert green.sum() > 50 and not (green & (tgt == 1)).any()  # hidden pixels are green
    # a frame-filling occluder: positions that hide too much are refused (None when all
    # tried positions do), the others still leave MIN_VISIBLE of the object
    big = np.zeros((64, 64, 3), np.float32)
    big_target = np.ones((64, 64), np.uint8)
    results = [occlude(image, target, big, big_target, rng, attempts=1) for _ in range(40)]
    assert any(r is None for r in results)
    for r in results:
        if r is not None:
            assert (r[1] == 1).sum() >= MIN_VISIBLE * target.sum()


def test_paste_mix_is_reproducible_and_keeps_objects():
    from napari_fbrs.core.training.data import TrainingData

    with pytest.raises(ValueError, match=r"paste is a probability in \[0, 1\], not 1.5"):
        TrainingData([], synthetic=2, paste=1.5)
    plain = TrainingData([], synthetic=6, seed=2)
    mixed = TrainingData([], synthetic=6, seed=2, paste=1.0)
    changed = 0
    for k in range(6):
        a_img, a_tgt = mixed.draw(np.random.default_rng([4, k]), 48)
        b_img, b_tgt = mixed.draw(np.random.default_rng([4, k]), 48)
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_tgt, b_tgt)
        assert (a_tgt == 1).sum() >= 40 and a_img.shape == (48, 48, 3)
        p_img, _ = plain.draw(np.random.default_rng([4, k]), 48)
        changed += not np.array_equal(p_img, a_img)
    assert changed == 6


# -- loop, resume, export -------------------------------------------------------------------
def test_train_resume_and_export(tmp_path):
    from napari_fbrs.core.models.registry import load_model
    from napari_fbrs.core.training import export, train
    from napari_fbrs.core.training.checkpoint import read_checkpoint

    out = tmp_path / "run"
    seen = []
    last = train(
        None,
        out,
        synthetic=3,
        steps=2,
        batch_size=2,
        crop=48,
        init="none",
        border_mirror=0.25,
        checkpoint_every=1,
        log_every=1,
        progress=seen.append,
    )
    assert last == out / "last.pt" and read_checkpoint(last)["step"] == 2
    assert read_checkpoint(last)["config"]["border_mirror"] == 0.25
    assert [p.step for p in seen] == [1, 2] and all(np.isfinite(p.loss) for p in seen)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    train(None, out, steps=3, resume=True, checkpoint_every=1, log_every=1)
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["step"] == 3 and ckpt["config"]["crop"] == 48  # recipe kept on resume
    assert sorted(p.name for p in out.glob("step_*.pt"))[-1] == "step_0000003.pt"

    shipped = export(out / "last.pt", tmp_path / "lite.pt")
    obj = torch.load(shipped, weights_only=True)
    assert obj["arch"] == "fbrs_lite"
    assert all(
        v.dtype == torch.float16 for v in obj["state_dict"].values() if v.is_floating_point()
    )
    net = load_model(shipped, device="cpu")
    assert type(net).__name__ == "LiteNet" and not net.training


def test_train_the_larger_lite2_and_keep_its_architecture(tmp_path):
    from napari_fbrs.core.models.registry import load_model
    from napari_fbrs.core.training import export, train
    from napari_fbrs.core.training.checkpoint import init_model, read_checkpoint

    out = tmp_path / "run"
    train(None, out, synthetic=2, steps=1, batch_size=1, crop=48, init="none", arch="fbrs_lite2")
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["arch"] == "fbrs_lite2" and ckpt["config"]["arch"] == "fbrs_lite2"
    train(None, out, steps=2, resume=True)  # the resumed run rebuilds the same network
    assert read_checkpoint(out / "last.pt")["step"] == 2
    shipped = export(out / "last.pt", tmp_path / "lite2.pt")
    assert torch.load(shipped, weights_only=True)["arch"] == "fbrs_lite2"
    assert load_model(shipped, device="cpu").arch_name == "fbrs_lite2"
    # fine-tuning from it keeps Lite2; asking for the other network is an error, not a guess
    assert init_model(shipped).arch_name == "fbrs_lite2"
    with pytest.raises(ValueError, match="is a 'fbrs_lite2' checkpoint, not 'fbrs_lite'"):
        init_model(shipped, arch="fbrs_lite")
    with pytest.raises(ValueError, match="training supports fbrs_lite, fbrs_lite2"):
        init_model(None, arch="hrnet18_ocr64")
    from napari_fbrs.core.models.registry import build_model

    other = tmp_path / "tiny.pt"
    torch.save({"arch": "tiny_test", "state_dict": build_model("tiny_test").state_dict()}, other)
    with pytest.raises(
        ValueError, match=r"cannot train 'tiny_test' \(the architecture of tiny.pt\)"
    ):
        init_model(other)


def test_time_limit_stops_with_a_checkpoint(tmp_path):
    from napari_fbrs.core.training import train
    from napari_fbrs.core.training.checkpoint import read_checkpoint

    train(
        None,
        tmp_path,
        synthetic=2,
        steps=50,
        batch_size=1,
        crop=40,
        init="none",
        time_limit=1e-6,
        checkpoint_every=100,
    )
    assert read_checkpoint(tmp_path / "last.pt")["step"] == 1


def test_resume_without_checkpoint_is_explained(tmp_path):
    from napari_fbrs.core.training import train

    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(None, tmp_path, resume=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give training data"),
        (["--data", "/no/such/folder"], "does not exist"),
        (["--synthetic", "2", "--crop", "8"], "at least 32"),
        (["--synthetic", "2", "--paste", "1.5"], "--paste is a probability in [0, 1], not 1.5"),
        (
            ["--synthetic", "2", "--border-mirror", "-0.1"],
            "--border-mirror is a probability in [0, 1], not -0.1",
        ),
        (["--resume"], "no checkpoint to continue"),
        (
            ["--synthetic", "1", "--init", "fbrs-lite", "--arch", "fbrs_lite"],
            "fbrs_lite.pt is a 'fbrs_lite2' checkpoint, not 'fbrs_lite'",
        ),
    ],
)
def test_train_cli_user_errors(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "napari_fbrs", "train", "--out", str(tmp_path / "o"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from napari_fbrs.core.training import checkpoint

    net = torch.nn.Linear(2, 1)
    path = checkpoint.save_checkpoint(tmp_path / "last.pt", net, None, 1, {}, {})
    before = path.read_bytes()

    def dies_half_way(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_checkpoint(path, net, None, 2, {}, {})
    assert path.read_bytes() == before  # step 1 can still be resumed
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    monkeypatch.undo()
    assert checkpoint.read_checkpoint(path)["step"] == 1
