"""``napari-fbrs evaluate`` end to end, and ``napari-fbrs datasets`` against a local server."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from napari_fbrs.cli import main
from napari_fbrs.core.evaluation.datasets import open_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TABLE_HEADER = (
    "| Dataset | Mode | Objects | NoC@80 | NoC@85 | NoC@90 | ≥{n}@85 | ≥{n}@90 | SPC, s |"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A checkpoint file of the untrained ``tiny_test`` network (fast, all modes)."""
    import torch

    from napari_fbrs.core.testing import TinyNet

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save({"arch": "tiny_test", "state_dict": TinyNet().state_dict()}, path)
    return path


def reference_noc(curve: list[float], threshold: float, max_clicks: int) -> int:
    hits = [k + 1 for k, v in enumerate(curve[:max_clicks]) if v >= threshold]
    return hits[0] if hits else max_clicks


def check_entry_against_its_curves(entry: dict, max_clicks: int) -> None:
    curves = [o["ious"] for o in entry["per_image"]]
    for key, t in (("80", 0.80), ("85", 0.85), ("90", 0.90)):
        expected = np.mean([reference_noc(c, t, max_clicks) for c in curves])
        assert entry["noc"][key] == pytest.approx(expected)
    for key, t in (("85", 0.85), ("90", 0.90)):
        assert entry["over_max"][key] == sum(not any(v >= t for v in c) for c in curves)
    carried = [c + [c[-1]] * (max_clicks - len(c)) for c in curves]
    np.testing.assert_allclose(entry["miou"], np.mean(carried, axis=0), atol=1e-6)


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_three_grabcut_images_end_to_end(shared_dir, tiny_model, tmp_path, capsys):
    data_root = shared_dir / "datasets"
    out = tmp_path / "report"
    argv = [
        "evaluate",
        "--model",
        str(tiny_model),
        "--mode",
        "NoBRS,f-BRS-B",
        "--datasets",
        "GrabCut",
        "--data-root",
        str(data_root),
        "--limit",
        "3",
        "--max-clicks",
        "3",
        "--no-flip",
        "--zoom-in",
        "off",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()

    # the table: printed and written, one row per mode
    assert TABLE_HEADER.format(n=3) in captured.out
    markdown = (out / "results.md").read_text()
    assert TABLE_HEADER.format(n=3) in markdown
    rows = table_rows(markdown)
    assert [r[:3] for r in rows] == [["GrabCut", "NoBRS", "3"], ["GrabCut", "f-BRS-B", "3"]]
    # progress on stderr, up to the last of the 6 object runs
    assert "6/6" in captured.err

    # the JSON: the shape of the issue, with NAME/MODE keys for two modes
    report = json.loads((out / "results.json").read_text())
    assert report["model"] == str(tiny_model)
    assert report["settings"] == {
        "zoom_in": "off", "min_crop": 200, "first_click_crop": None, "beyond_border": False,
        "trim_overshoot": False, "flip": False, "thresh": 0.49,
    }  # fmt: skip
    assert list(report["datasets"]) == ["GrabCut/NoBRS", "GrabCut/f-BRS-B"]
    images = sorted((data_root / "GrabCut" / "data_GT").iterdir(), key=lambda p: p.name)
    first_three = [p.stem for p in images[:3]]
    for key, entry in report["datasets"].items():
        assert entry["mode"] == key.split("/")[1]
        assert set(entry["noc"]) == {"80", "85", "90"}
        assert set(entry["over_max"]) == {"85", "90"}
        assert isinstance(entry["spc"], float) and entry["spc"] > 0
        assert [o["name"] for o in entry["per_image"]] == first_three
        for obj in entry["per_image"]:
            assert 1 <= len(obj["ious"]) <= 3
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in obj["ious"])
        check_entry_against_its_curves(entry, max_clicks=3)
        row = next(r for r in rows if r[1] == entry["mode"])
        assert row[3:6] == [f"{entry['noc'][k]:.2f}" for k in ("80", "85", "90")]

    # the plot
    assert (out / "miou.png").read_bytes().startswith(PNG_SIGNATURE)


class DiskPredictor:
    """Stands in for ``napari_fbrs.Predictor``: a disk of ``radius`` around every positive
    click, minus disks around the negative ones."""

    radius = 6
    made: list[str] = []
    settings: list[dict] = []

    def __init__(self, net, mode="f-BRS-B", **kwargs):
        DiskPredictor.made.append(mode)
        DiskPredictor.settings.append(kwargs)
        self.shape = None
        self.clicks = []

    def set_image(self, image):
        self.shape = image.shape[:2]
        self.clicks = []

    def reset(self):
        self.clicks = []

    def add_click(self, y, x, positive=True):
        self.clicks.append((y, x, positive))
        return self.mask.astype(np.float32)

    @property
    def mask(self):
        yy, xx = np.mgrid[: self.shape[0], : self.shape[1]]
        m = np.zeros(self.shape, bool)
        for positive in (True, False):
            for y, x, pos in self.clicks:
                if pos == positive:
                    d = (yy - y) ** 2 + (xx - x) ** 2 <= self.radius**2
                    m = m | d if positive else m & ~d
        return m


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def make_folder_dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    one = disk((32, 32), 15, 15, DiskPredictor.radius)  # found by the first click
    two = disk((32, 52), 10, 10, DiskPredictor.radius) | disk((32, 52), 22, 40, 6)  # 2 clicks
    for name, mask in (("one", one), ("two", two)):
        Image.fromarray(np.full(mask.shape + (3,), 90, np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    return root


def test_evaluate_numbers_follow_the_protocol(tiny_model, tmp_path, monkeypatch, capsys):
    import napari_fbrs

    DiskPredictor.made, DiskPredictor.settings = [], []
    monkeypatch.setattr(napari_fbrs, "Predictor", DiskPredictor, raising=False)
    monkeypatch.setattr(napari_fbrs, "load_model", lambda path, device: object(), raising=False)
    data = make_folder_dataset(tmp_path / "mine")
    out = tmp_path / "out"
    argv = [
        "evaluate",
        "--model",
        str(tiny_model),
        "--mode",
        "nobrs",
        "--datasets",
        str(data),
        "--zoom-in",
        "64",
        "--beyond-border",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-plot",
        "--thresh",
        "0.3",
        "--trim-overshoot",
    ]
    assert main(argv) == 0
    assert DiskPredictor.made == ["NoBRS"]
    assert DiskPredictor.settings[0]["prob_thresh"] == 0.3
    assert DiskPredictor.settings[0]["trim_overshoot"] is True
    zoom = DiskPredictor.settings[0]["zoom_in"]
    assert (zoom.target_size, zoom.beyond_border, zoom.first_click_crop) == (64, True, None)
    report = json.loads((out / "results.json").read_text())
    assert report["settings"]["thresh"] == 0.3 and report["settings"]["beyond_border"]
    assert report["settings"]["trim_overshoot"] is True
    entry = report["datasets"]["mine"]  # one mode: keyed by the dataset's name only
    assert [(o["name"], o["ious"]) for o in entry["per_image"]] == [
        ("one", [1.0]),
        ("two", [0.5, 1.0]),
    ]
    assert entry["per_image"][1]["clicks"] == [[10, 10, True], [22, 40, True]]
    assert entry["noc"] == {"80": 1.5, "85": 1.5, "90": 1.5}
    check_entry_against_its_curves(entry, max_clicks=20)
    assert entry["over_max"] == {"85": 0, "90": 0}
    assert not (out / "miou.png").exists()
    assert table_rows(capsys.readouterr().out)[0][:8] == [
        "mine",
        "NoBRS",
        "2",
        "1.50",
        "1.50",
        "1.50",
        "0",
        "0",
    ]


def user_error_line(capsys) -> str:
    """The one error line on stderr: it comes last, after any progress lines."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("napari-fbrs ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    return errors[0]


def test_default_model_is_the_bundled_one_with_a_clear_error_when_absent(
    tmp_path, monkeypatch, capsys
):
    from napari_fbrs.core import zoo

    monkeypatch.setattr(zoo, "bundled_weights_path", lambda filename: tmp_path / filename)
    data = make_folder_dataset(tmp_path / "mine")
    assert main(["evaluate", "--datasets", str(data), "--out", str(tmp_path / "o")]) == 2
    line = user_error_line(capsys)
    assert line.startswith("napari-fbrs evaluate: error:") and "'fbrs-lite'" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mode", "f-BRS-Z"], "unknown mode 'f-BRS-Z'"),
        (["--max-clicks", "0"], "--max-clicks must be at least 1"),
        (["--target-iou", "0.8"], "--target-iou must lie in"),
        (["--zoom-in", "huge"], "--zoom-in must be"),
        (["--min-crop", "4"], "--min-crop must be at least 8 pixels, not 4"),
        (["--thresh", "1"], "--thresh must lie strictly between 0 and 1, got 1"),
        (["--first-click-crop", "2"], "--first-click-crop must be at least 8 pixels, not 2"),
        (["--first-click-crop", "big"], "must be a number of pixels, 'auto' or 'off', not 'big'"),
        (["--zoom-in", "off", "--first-click-crop", "64"], "--first-click-crop needs ZoomIn"),
        (["--zoom-in", "off", "--beyond-border"], "--beyond-border needs ZoomIn"),
        (["--model", "no_such_model"], "unknown model 'no_such_model'"),
        (["--model", "missing/file.pt"], "model file not found"),
    ],
)
def test_evaluate_user_errors_are_one_line(tmp_path, capsys, extra, message):
    data = make_folder_dataset(tmp_path / "mine")
    assert main(["evaluate", "--datasets", str(data), *extra]) == 2
    assert message in user_error_line(capsys)


def test_evaluate_unknown_or_missing_dataset(tmp_path, capsys):
    assert main(["evaluate", "--datasets", "Nowhere", "--data-root", str(tmp_path)]) == 2
    assert "neither a known dataset" in user_error_line(capsys)
    assert main(["evaluate", "--datasets", "DAVIS", "--data-root", str(tmp_path)]) == 2
    assert "napari-fbrs datasets download DAVIS" in user_error_line(capsys)


# ------------------------------------------------------------------------------ datasets
def grabcut_zip(top: str = "GrabCut") -> bytes:
    """A small archive in the layout of the release's GrabCut.zip."""
    mask = np.zeros((12, 16), np.uint8)
    mask[2:10, 3:13] = 128
    mask[4:8, 5:11] = 255
    buffers = {}
    for name, array, fmt in (
        ("data_GT/flower.jpg", np.full((12, 16, 3), 70, np.uint8), "JPEG"),
        ("boundary_GT/flower.bmp", mask, "BMP"),
    ):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format=fmt)
        buffers[f"{top}/{name}"] = buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in buffers.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving ``served/``; records the paths asked for."""
    served = tmp_path / "served"
    served.mkdir()
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/release/"
    monkeypatch.setenv("NAPARI_FBRS_DATASETS_URL", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    (served / "release").mkdir()
    try:
        yield SimpleNamespace(dir=served / "release", url=url, asked=asked)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_datasets_download_from_a_local_server(http_server, tmp_path, capsys):
    (http_server.dir / "GrabCut.zip").write_bytes(grabcut_zip())
    root = tmp_path / "data"
    assert main(["datasets", "download", "grabcut", "--data-root", str(root)]) == 0
    captured = capsys.readouterr()
    assert f"GrabCut: ready at {root / 'GrabCut'}" in captured.out
    assert http_server.url + "GrabCut.zip" in captured.err and "MB" in captured.err
    assert http_server.asked == ["/release/GrabCut.zip"]
    assert not (root / "GrabCut.zip").exists()  # the archive is removed once unpacked
    assert sorted(p.name for p in root.iterdir()) == ["GrabCut"]
    sample = open_dataset("GrabCut", root)[0]
    assert sample.name == "flower" and sample.gt.sum() == 24 and sample.ignore.sum() == 80 - 24

    # present: nothing is fetched again; --force fetches it again
    assert main(["datasets", "download", "GrabCut", "--data-root", str(root)]) == 0
    assert len(http_server.asked) == 1
    assert main(["datasets", "download", "GrabCut", "--data-root", str(root), "--force"]) == 0
    assert len(http_server.asked) == 2 and (root / "GrabCut" / "data_GT" / "flower.jpg").is_file()

    # list: GrabCut present, the others missing with their address
    capsys.readouterr()
    assert main(["datasets", "list", "--data-root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    status = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert status == {
        "GrabCut": "present",
        "Berkeley": "missing",
        "DAVIS": "missing",
        "COCO_MVal": "missing",
        "SBD": "missing",
    }
    assert any(http_server.url + "DAVIS.zip" in line for line in lines)


def test_datasets_download_failures_are_one_line(http_server, tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["datasets", "download", "DAVIS", "--data-root", str(root)]) == 2
    line = user_error_line(capsys)
    assert "could not download DAVIS" in line and "404" in line
    (http_server.dir / "Berkeley.zip").write_bytes(grabcut_zip())  # the wrong layout
    assert main(["datasets", "download", "Berkeley", "--data-root", str(root)]) == 2
    assert "does not contain images and masks folders" in user_error_line(capsys)
    assert not (root / "Berkeley").exists() and not (root / "Berkeley.zip").exists()
    assert main(["datasets", "download", "SBD", "--data-root", str(root)]) == 2
    assert "no download for 'SBD'" in user_error_line(capsys)


def test_download_checks_a_given_hash(http_server, tmp_path):
    from napari_fbrs.core.evaluation.download import download_dataset

    data = grabcut_zip(top="inner/GrabCut")  # the layout may sit deeper in the archive
    (http_server.dir / "GrabCut.zip").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="(?i)hash"):
        download_dataset("GrabCut", tmp_path / "bad", known_hash="sha256:" + "0" * 64)
    assert not (tmp_path / "bad" / "GrabCut").exists()
    assert not (tmp_path / "bad" / "GrabCut.zip").exists()
    seen = []
    path = download_dataset(
        "GrabCut",
        tmp_path / "good",
        known_hash=f"sha256:{sha}",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert path == tmp_path / "good" / "GrabCut"
    assert (path / "boundary_GT" / "flower.bmp").is_file()
    assert seen and seen[-1] == (len(data), len(data))
    # an explicit address wins over the release's
    other = download_dataset("GrabCut", tmp_path / "other", url=http_server.url + "GrabCut.zip")
    assert (other / "data_GT" / "flower.jpg").is_file()


def test_progress_bar_without_a_terminal_prints_every_tenth_and_the_end():
    from napari_fbrs.cli.evaluate import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar("objects", stream=stream)
    for done in range(1, 21):
        bar(done, 20)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # the first update, then each new tenth
    assert lines[0].startswith("objects [") and "1/20" in lines[0]
    assert "20/20" in lines[-1] and "(100%" in lines[-1]
    # an unknown total (no content-length): the last state when the bar closes
    stream = io.StringIO()
    bar = ProgressBar("GrabCut", unit=" MB", stream=stream, scale=1e-6)
    for done in (1_000_000, 2_500_000):
        bar(done, 0)
    bar.close()
    assert stream.getvalue().splitlines() == ["GrabCut 2.5 MB"]
