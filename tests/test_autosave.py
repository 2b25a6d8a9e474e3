"""Sidecar autosave: round trips, provenance and replay, crashes, hostile and damaged files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_fbrs.core import atomic as atomic_module
from napari_fbrs.core.autosave import (
    SUFFIX,
    Autosave,
    AutosaveError,
    ImageInfo,
    ObjectRecord,
    SessionState,
    autosave_dir,
    image_fingerprint,
    list_autosaves,
    replay,
    sidecar_path,
)
from napari_fbrs.core.autosave import document as autosave_document
from napari_fbrs.core.autosave import paths as autosave_paths
from napari_fbrs.core.clicks_table import clicks_table_rows
from napari_fbrs.core.session import SegmentationSession, SessionClick
from napari_fbrs.core.testing import disk_net as _disk_net

H, W = 40, 48
RADIUS = 5.0


def disk_net(radius: float = RADIUS):
    return _disk_net(radius)


def make_factory():
    """A predictor factory over :func:`disk_net` (NoBRS, no ZoomIn, no flip)."""
    from napari_fbrs.core.predictor import Predictor

    net = disk_net()

    def make():
        return Predictor(net, mode="NoBRS", device="cpu", zoom_in=None, with_flip=False)

    return make


@pytest.fixture(scope="module")
def factory():
    return make_factory()


def _disk_predictor():
    """A predictor whose mask is a disk at the last positive click (so propagation carries
    an object through every slice), small disks cleared at negative clicks."""
    from test_session import DiskPredictor

    return DiskPredictor(neg_radius=1.0)


def make_stack(n: int = 4) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 255, (n, H, W), dtype=np.uint8)


def busy_session(factory) -> SegmentationSession:
    """A stack session with two commits, an undone commit and unfinished clicks."""
    s = SegmentationSession(
        make_stack(), predictor_factory=factory, labels=np.zeros((4, H, W), np.uint8)
    )
    s.add_click(10, 12, key=(0,))
    s.predict((0,))
    s.commit((0,))  # label 1
    s.add_click(25, 30, key=(1,))
    s.add_click(26, 42, positive=False, key=(1,))
    s.predict((1,))
    s.commit((1,))  # label 2
    s.add_click(5.5, 40.25, key=(3,))  # unfinished
    s.add_click(30, 10, key=(2,))
    s.predict((2,))
    s.commit((2,))  # label 3, then undone: its click is back on slice 2, redo can redo it
    s.undo()
    return s


# ------------------------------------------------------------------------------ round trip


def test_a_session_round_trips_through_its_sidecar(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("cells" + SUFFIX))
    state = saver.write_session(s, name="cells", path="/data/cells.tif", settings={"mode": "NoBRS"})
    assert [o.label for o in state.objects] == [1, 2]  # the undone commit is not listed

    back = Autosave.read(saver.path)
    assert back.image == state.image
    assert back.image.shape == (4, H, W) and back.image.dtype == "uint8" and not back.image.rgb
    assert back.image.fingerprint == image_fingerprint(s.image_slice((0,)))
    assert back.clicks == {(2,): (SessionClick(30.0, 10.0, True),),
                           (3,): (SessionClick(5.5, 40.25, True),)}  # fmt: skip
    assert [(o.label, o.key, o.clicks, o.propagated) for o in back.objects] == [
        (1, (0,), (SessionClick(10.0, 12.0, True),), False),
        (2, (1,), (SessionClick(25.0, 30.0, True), SessionClick(26.0, 42.0, False)), False),
    ]
    assert back.objects[0].n_pixels == int((s.labels == 1).sum()) > 0
    assert back.objects[0].settings == {"mode": "NoBRS"} and back.objects[0].committed_at
    assert back.labels.dtype == np.uint8
    np.testing.assert_array_equal(back.labels, s.labels)
    assert back.prob_thresh == s.prob_thresh and back.settings == {"mode": "NoBRS"}
    # the JSON is plain, readable text
    doc = json.loads(saver.path.read_text())
    assert doc["format"] == "napari-fbrs-autosave" and doc["version"] == 1


def test_restore_after_a_crash_brings_back_clicks_and_labels(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("stack" + SUFFIX))
    saver.write_session(s, name="stack")
    labels, clicks = s.labels.copy(), s.all_clicks()
    del s  # the crash

    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    state = Autosave(saver.path).load()
    out = state.restore(fresh, pixels=True)
    assert out is fresh.labels
    np.testing.assert_array_equal(fresh.labels, labels)
    assert fresh.labels.dtype == labels.dtype
    assert fresh.all_clicks() == clicks
    # work goes on: the restored unfinished object predicts and commits with the next id
    fresh.predict((3,))
    assert fresh.commit((3,)).label == 3
    # and restoring the clicks was one undo step
    assert fresh.undo() is not None


def test_an_object_being_edited_keeps_its_id_through_a_crash(tmp_path, factory):
    s = busy_session(factory)
    assert s.edit_object(2, (1,)) == 2  # reopened: finishing would replace object 2
    s.set_object_label((3,), 1)  # an id carried to slice 3
    saver = Autosave(tmp_path / ("stack" + SUFFIX))
    saver.write_session(s, name="stack")
    assert Autosave.read(saver.path).pins == {(1,): 2, (3,): 1}
    labels = s.labels.copy()
    del s  # the crash

    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    Autosave(saver.path).load().restore(fresh)
    assert fresh.pinned_labels() == {(1,): 2, (3,): 1}
    assert len(fresh.clicks((1,))) == 2
    fresh.add_click(20, 20, key=(1,))  # a correction
    fresh.predict((1,))
    info = fresh.commit((1,))
    assert info.label == 2 and info.n_pixels > 0  # without the pin: a new id, 3
    assert fresh.labels.max() == 2 and (fresh.labels[1] == 2).sum() > (labels[1] == 2).sum()
    # a sidecar of an older version (no pins) restores without them
    doc = json.loads(saver.path.read_text())
    doc.pop("pins")
    write_doc(saver.path, doc)
    assert Autosave.read(saver.path).pins == {}


def test_objects_restored_from_a_sidecar_can_be_edited_with_their_clicks(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("stack" + SUFFIX))
    saver.write_session(s, name="stack")
    del s  # the crash

    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    Autosave(saver.path).load().restore(fresh)
    assert fresh.edit_object(2, (1,)) == 2  # object 2's two clicks, from the sidecar
    assert [tuple(c) for c in fresh.clicks((1,))] == [(25.0, 30.0, True), (26.0, 42.0, False)]
    np.testing.assert_array_equal(fresh.predict((1,)) >= 0.49, fresh.labels[1] == 2)
    fresh.undo()
    # painted over since: its clicks would no longer describe it, so the id only
    ys, xs = np.nonzero(fresh.labels[0] == 1)
    fresh.labels[0, ys[0], xs[0]] = 0
    assert fresh.edit_object(1, (0,)) == 0 and fresh.object_label((0,)) == 1
    # records that do not fit the image are skipped, not raised
    fresh.remember_objects([(5, (9,), [(1, 2, True)], 3), (6, (0,), [(999, 2, True)], 3)])
    assert (5, (9,)) not in fresh._known and (6, (0,)) not in fresh._known


def test_an_edited_object_comes_back_from_a_sidecar_with_its_clicks(tmp_path, factory):
    s = busy_session(factory)
    assert s.edit_object(2, (1,)) == 2
    s.add_click(20, 20, key=(1,))  # a third click: the object changes, the id stays
    s.predict((1,))
    s.commit((1,))
    made = s.labels[1] == 2
    saver = Autosave(tmp_path / ("stack" + SUFFIX))
    saver.write_session(s, name="stack")
    (record,) = [o for o in Autosave.read(saver.path).objects if len(o.clicks) == 3]
    # the commit wrote only the new pixels; the object is those and the ones it kept
    assert record.object_pixels == int(made.sum()) > record.n_pixels
    del s

    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    Autosave(saver.path).load().restore(fresh)
    assert fresh.edit_object(2, (1,)) == 3  # the edited object's three clicks
    fresh.undo()
    clicks = {o.label: len(o.clicks) for o in fresh.reproducible_objects()}
    assert clicks == {1: 1, 2: 3}
    # a sidecar of before object_pixels: only the pixels written are known, which do not
    # describe the edited object: the id only
    doc = json.loads(saver.path.read_text())
    for item in doc["objects"]:
        item.pop("object_pixels")
    write_doc(saver.path, doc)
    older = SegmentationSession(make_stack(), predictor_factory=factory)
    Autosave(saver.path).load().restore(older)
    assert older.edit_object(2, (1,)) == 0
    assert older.edit_object(1, (0,)) == 1  # not replaced: n_pixels is its count


def test_objects_committed_before_restoring_come_back_with_undo(tmp_path, factory):
    """Restoring replaces the labels as one undo step: nothing committed earlier is lost,
    and the history before the restore still undoes."""
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("stack" + SUFFIX))
    saver.write_session(s, name="stack")
    saved = s.labels.copy()
    del s

    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    fresh.add_click(5, 5, key=(0,))
    fresh.predict((0,))
    info = fresh.commit((0,))  # committed before pressing "restore"
    before = fresh.labels.copy()
    assert before.any()
    Autosave(saver.path).load().restore(fresh)
    np.testing.assert_array_equal(fresh.labels, saved)
    assert fresh.undo().description == "undo: click edits"  # the restored clicks
    change = fresh.undo()
    assert change.labels and change.description == "undo: restore of the autosaved objects"
    np.testing.assert_array_equal(fresh.labels, before)  # the earlier commit is back
    assert fresh.undo().description == f"undo: commit of label {info.label}"
    assert not fresh.labels.any()
    fresh.redo()
    fresh.redo()
    np.testing.assert_array_equal(fresh.labels, saved)


def test_replay_reproduces_the_labels_from_the_recorded_clicks(tmp_path, factory):
    s = busy_session(factory)
    state = Autosave(tmp_path / ("a" + SUFFIX)).write_session(s)
    fresh = SegmentationSession(
        make_stack(), predictor_factory=factory, labels=np.zeros((4, H, W), np.uint8)
    )
    done = []
    infos = replay(state, fresh, progress=lambda i, n: done.append((i, n)))
    assert [i.label for i in infos] == [1, 2] and done == [(1, 2), (2, 2)]
    np.testing.assert_array_equal(fresh.labels, s.labels)


def test_replay_of_a_propagated_object(tmp_path):
    # forward only and not into slice 4: the replay must walk the same way, stop the same
    stack = make_stack(5)
    s = SegmentationSession(stack, predictor_factory=_disk_predictor)
    s.add_click(20, 24, key=(1,))
    s.predict((1,))
    request = s.propagation_request((1,), direction=1, stop_slices=[4], stop_iou=0.3)
    s.commit_propagation(request, s.compute_propagation(request))
    assert s.labels.any(axis=(1, 2)).tolist() == [False, True, True, True, False]
    state = Autosave(tmp_path / ("p" + SUFFIX)).write_session(s)
    assert state.objects[0].propagated and state.objects[0].key == (1,)
    assert state.objects[0].n_pixels == int(s.labels.astype(bool).sum())
    recorded = Autosave.read(tmp_path / ("p" + SUFFIX))
    assert recorded.objects[0].propagation == {
        "axis": 0, "direction": 1, "stop_iou": 0.3, "stop_slices": (4,),
        "regrowth": None, "min_contrast": None,
    }  # fmt: skip
    fresh = SegmentationSession(stack, predictor_factory=_disk_predictor)
    replay(recorded, fresh)
    np.testing.assert_array_equal(fresh.labels, s.labels)


def test_a_restored_propagation_is_listed_with_its_clicks_until_changed(tmp_path):
    stack = make_stack(5)
    s = SegmentationSession(stack, predictor_factory=_disk_predictor)
    s.add_click(20, 24, key=(2,))
    s.predict((2,))
    request = s.propagation_request((2,))
    s.commit_propagation(request, s.compute_propagation(request))
    s.add_click(8, 8, key=(4,))  # and one object on one slice
    s.predict((4,))
    s.commit((4,))
    saver = Autosave(tmp_path / ("p" + SUFFIX))
    saver.write_session(s)
    made = [(o.label, o.key, o.propagated, o.keys) for o in s.reproducible_objects()]
    assert made[0][2] and len(made[0][3]) > 1  # the propagation reached other slices

    fresh = SegmentationSession(stack, predictor_factory=_disk_predictor)
    Autosave(saver.path).load().restore(fresh)
    objects = fresh.reproducible_objects()
    assert [(o.label, o.key, o.propagated, o.keys) for o in objects] == made
    assert objects[0].clicks == (SessionClick(20.0, 24.0, True),)
    # with its settings, so that its clicks file row says how it was propagated
    assert objects[0].propagation == s.reproducible_objects()[0].propagation
    assert clicks_table_rows(objects)[1][-5:] == ["both", "0.5", "", "", ""]
    assert objects[0].n_pixels == int(np.count_nonzero(fresh.labels == 1))
    # one pixel painted onto one of its slices: its clicks no longer make it
    ys, xs = np.nonzero(fresh.labels[made[0][3][-1]] == 0)
    fresh.labels[made[0][3][-1]][ys[0], xs[0]] = 1
    assert [o.label for o in fresh.reproducible_objects()] == [2]
    fresh.labels[made[0][3][-1]][ys[0], xs[0]] = 0
    # propagated again in this session: the new commit describes it, listed once
    fresh.add_click(20, 25, key=(2,))
    fresh.predict((2,))
    request = fresh.propagation_request((2,))
    fresh.commit_propagation(request, fresh.compute_propagation(request), label=1, replace=True)
    again = fresh.reproducible_objects()
    assert [(o.label, o.clicks[-1]) for o in again] == [
        (2, SessionClick(8.0, 8.0, True)),
        (1, SessionClick(20.0, 25.0, True)),
    ]
    # records that do not fit the image are skipped, not raised
    fresh.remember_propagations([(9, (7,), [(1, 2, True)], 3)])
    assert 9 not in fresh._known_propagations


def test_provenance_survives_the_bounded_undo_history_and_restores(tmp_path, factory):
    image = make_stack(1)[0]
    s = SegmentationSession(image, predictor_factory=factory, max_history=2)
    saver = Autosave(tmp_path / ("h" + SUFFIX))
    spots = [(8, 8), (8, 30), (30, 8), (30, 30)]
    for y, x in spots:
        s.add_click(y, x)
        s.predict()
        s.commit()
        saver.write_session(
            s, settings={"n": len(saver.last_state.objects) if saver.last_state else 0}
        )
    # the session's history now holds only the last commit; the sidecar holds all four
    state = saver.last_state
    assert [o.label for o in state.objects] == [1, 2, 3, 4]
    assert [o.settings["n"] for o in state.objects] == [0, 1, 2, 3]  # kept from first write
    assert state.objects[0].clicks == (SessionClick(8.0, 8.0, True),)
    # after a restore the earlier objects stay listed, new ones are added
    fresh = SegmentationSession(image, predictor_factory=factory)
    saver2 = Autosave(saver.path)
    saver2.load().restore(fresh)
    fresh.add_click(20, 20)
    fresh.predict()
    fresh.commit(overwrite=True)
    assert [o.label for o in saver2.write_session(fresh).objects] == [1, 2, 3, 4, 5]
    # an object whose label was erased by the user (no longer in the labels) is dropped
    fresh.labels[fresh.labels == 2] = 0
    fresh.clear_history()
    assert [o.label for o in saver2.write_session(fresh).objects] == [1, 3, 4, 5]


def test_undo_and_redo_of_a_commit_follow_in_the_sidecar(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("u" + SUFFIX))
    assert [o.label for o in saver.write_session(s).objects] == [1, 2]
    s.redo()  # the commit of label 3 again
    assert [o.label for o in saver.write_session(s).objects] == [1, 2, 3]
    s.undo()
    state = saver.write_session(s)
    assert [o.label for o in state.objects] == [1, 2]
    np.testing.assert_array_equal(Autosave.read(saver.path).labels, s.labels)


# ------------------------------------------------------------------------------ files


def test_the_labels_file_is_rewritten_only_when_the_labels_change(tmp_path, factory, monkeypatch):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("w" + SUFFIX))
    writes = []
    real = np.savez_compressed
    monkeypatch.setattr(np, "savez_compressed", lambda f, **a: (writes.append(1), real(f, **a)))
    saver.write_session(s)
    s.add_click(1, 1, key=(0,))  # clicks only
    saver.write_session(s)
    saver.write_session(s, labels_changed=False)
    assert len(writes) == 1
    first = sorted(p.name for p in tmp_path.glob("*.labels.npz"))
    s.redo() if s.can_redo else None
    s.reset_clicks((0,))
    s.add_click(12, 40, key=(2,))
    s.predict((2,))
    s.commit((2,))
    saver.write_session(s)
    assert len(writes) == 2
    files = sorted(p.name for p in tmp_path.glob("*.labels.npz"))
    assert len(files) == 1 and files != first  # the stale one is gone
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left
    np.testing.assert_array_equal(Autosave.read(saver.path).labels, s.labels)


def test_sparse_and_dense_labels_and_every_integer_dtype(tmp_path):
    image = np.zeros((H, W), np.uint8)
    for dtype in (
        np.uint8,
        np.int8,
        np.uint16,
        np.int16,
        np.uint32,
        np.int32,
        np.uint64,
        np.int64,
        np.bool_,
    ):
        for fill in (0.01, 0.9):
            rng = np.random.default_rng(0)
            hi = 2 if dtype == np.bool_ else 100
            labels = np.where(rng.random((H, W)) < fill, rng.integers(1, hi, (H, W)), 0).astype(
                dtype
            )
            s = SegmentationSession(image, labels=labels)
            path = tmp_path / f"{np.dtype(dtype).name}-{fill}{SUFFIX}"
            Autosave(path).write_session(s)
            back = Autosave.read(path).labels
            assert back.dtype == labels.dtype
            np.testing.assert_array_equal(back, labels)


def test_a_crash_while_writing_leaves_the_previous_sidecar_intact(tmp_path, factory, monkeypatch):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("c" + SUFFIX))
    saver.write_session(s)
    before = Autosave.read(saver.path)
    s.redo()  # labels change: a new .npz, then the JSON
    real_replace = os.replace

    def dies_on_the_json(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt("killed")  # the process dies between the two renames
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_module.os, "replace", dies_on_the_json)
    with pytest.raises(KeyboardInterrupt):
        saver.write_session(s)
    monkeypatch.setattr(atomic_module.os, "replace", real_replace)
    after = Autosave.read(saver.path)  # still the previous one, complete and consistent
    assert [o.label for o in after.objects] == [o.label for o in before.objects] == [1, 2]
    np.testing.assert_array_equal(after.labels, before.labels)
    assert not list(tmp_path.glob(".*tmp"))

    def dies_in_numpy(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise MemoryError("killed while compressing")

    monkeypatch.setattr(np, "savez_compressed", dies_in_numpy)
    s.labels[0, 0, 0] = 7  # new labels: a new .npz is written
    with pytest.raises(MemoryError):
        saver.write(SessionState.from_session(s))
    assert [o.label for o in Autosave.read(saver.path).objects] == [1, 2]
    assert not list(tmp_path.glob(".*tmp"))


_CRASH_SCRIPT = """
import os, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_autosave import busy_session, make_factory
from napari_fbrs.core.autosave import Autosave
make = make_factory()
s = busy_session(make)
saver = Autosave({path!r})
saver.write_session(s, name="stack")
np.save({labels!r}, s.labels)
s.add_click(33, 3, key=(0,))
saver.write_session(s, name="stack")
os.kill(os.getpid(), 9)   # a hard crash: no cleanup, no atexit
"""


def test_a_killed_process_is_restored_from_its_sidecar(tmp_path, factory):
    path = tmp_path / ("killed" + SUFFIX)
    script = _CRASH_SCRIPT.format(
        tests=str(Path(__file__).parent), path=str(path), labels=str(tmp_path / "labels.npy")
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    Autosave(path).load().restore(fresh, pixels=True)
    np.testing.assert_array_equal(fresh.labels, np.load(tmp_path / "labels.npy"))
    assert fresh.clicks((0,)) == [SessionClick(33.0, 3.0, True)]
    assert fresh.clicks((1,)) == [] and fresh.clicks((3,)) == [SessionClick(5.5, 40.25, True)]


def test_concurrent_writes_leave_one_complete_sidecar(tmp_path, factory):
    s = busy_session(factory)
    states = [SessionState.from_session(s, copy_labels=True, name=f"n{i}") for i in range(4)]
    saver = Autosave(tmp_path / ("t" + SUFFIX))
    threads = [
        threading.Thread(target=lambda st=st: [saver.write(st) for _ in range(5)]) for st in states
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    back = Autosave.read(saver.path)
    assert back.image.name in {"n0", "n1", "n2", "n3"}
    np.testing.assert_array_equal(back.labels, s.labels)


# ------------------------------------------------------------------------------ bad files


def write_doc(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


@pytest.fixture
def good(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("g" + SUFFIX))
    saver.write_session(s)
    return saver.path, json.loads(saver.path.read_text())


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.update(version=99), "newer napari-fbrs"),
        (lambda d: d.update(format="something else"), "not a napari-fbrs autosave"),
        (lambda d: d.update(version="1"), "no valid version"),
        (lambda d: d["clicks"][0]["clicks"].append(["a", 1.0, True]), "finite coordinates"),
        (lambda d: d["clicks"][0]["clicks"].append([1.0, 2.0, "yes"]), "true or false"),
        (lambda d: d["clicks"][0]["clicks"].append([1.0, 2.0]), "[y, x, positive]"),
        (lambda d: d["clicks"][0].update(key=[-1]), ">= 0"),
        (lambda d: d["objects"][0].update(label=0), ">= 1"),
        (lambda d: d["pins"].append({"key": [1], "label": 0}), ">= 1"),
        (lambda d: d["pins"].append({"key": [-1], "label": 2}), ">= 0"),
        (lambda d: d["pins"].append({"key": [1]}), "damaged"),
        (lambda d: d["objects"][0].update(label=1.5), "integer"),
        (lambda d: d["objects"][0].update(propagation=[1]), "propagation must be an object"),
        (lambda d: d["objects"][0].update(propagation={"direction": 2}), "direction must be"),
        (lambda d: d["objects"][0].update(propagation={"axis": -1}), "axis must be >= 0"),
        (lambda d: d["objects"][0].update(propagation={"stop_iou": 1.5}), "stop_iou must lie"),
        (lambda d: d["objects"][0].update(propagation={"stop_iou": "x"}), "finite number"),
        (lambda d: d["objects"][0].update(propagation={"regrowth": 0}), "regrowth must be"),
        (lambda d: d["objects"][0].update(propagation={"min_contrast": 2}), "contrast must lie"),
        (lambda d: d["objects"][0].update(propagation={"stop_slices": [-3]}), ">= 0"),
        (lambda d: d.update(prob_thresh=3.0), "prob_thresh"),
        (lambda d: d.update(image=[]), "image must be an object"),
        (lambda d: d.pop("image"), "damaged"),
    ],
)
def test_damaged_sidecars_are_refused_with_the_reason(good, mutate, expected):
    path, doc = good
    mutate(doc)
    write_doc(path, doc)
    with pytest.raises(AutosaveError, match="autosave") as info:
        Autosave.read(path)
    assert expected in str(info.value)


def test_nan_coordinates_in_a_sidecar_are_refused(good):
    path, doc = good
    text = json.dumps(doc).replace("[25.0, 30.0, true]", "[NaN, 30.0, true]")
    write_doc(path, text)
    with pytest.raises(AutosaveError, match="finite coordinates"):
        Autosave.read(path)


@pytest.mark.parametrize("cut", [0, 1, 100, -2])
def test_truncated_and_missing_sidecars(good, cut):
    path, _ = good
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(AutosaveError, match="truncated or corrupt|not a napari-fbrs"):
        Autosave.read(path)
    path.unlink()
    with pytest.raises(AutosaveError, match="no autosave"):
        Autosave.read(path)


def test_binary_garbage_and_oversized_sidecars(good, monkeypatch):
    path, _ = good
    path.write_bytes(os.urandom(256))
    with pytest.raises(AutosaveError, match="truncated or corrupt"):
        Autosave.read(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(AutosaveError, match="not a napari-fbrs autosave"):
        Autosave.read(path)
    monkeypatch.setattr(autosave_document, "MAX_JSON_BYTES", 10)
    path.write_text(" " * 100)
    with pytest.raises(AutosaveError, match="far larger"):
        Autosave.read(path)


def test_labels_files_missing_damaged_or_replaced(good):
    path, doc = good
    npz = path.with_name(doc["labels"]["file"])
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(AutosaveError, match="truncated or corrupt") as info:
        Autosave.read(path)
    assert "labels=False" in str(info.value)
    state = Autosave.read(path, labels=False)  # the clicks and objects are still there
    assert state.labels is None and len(state.objects) == 2
    other = np.ones(tuple(doc["labels"]["shape"]), np.uint8)
    np.savez_compressed(npz, labels=other)
    with pytest.raises(AutosaveError, match="sparse|does not hold|digest"):
        Autosave.read(path)
    doc["labels"]["encoding"] = "dense"
    write_doc(path, doc)
    with pytest.raises(AutosaveError, match="digest"):
        Autosave.read(path)
    npz.unlink()
    with pytest.raises(AutosaveError, match="missing"):
        Autosave.read(path)


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "x.labels.npz",
        "a/b.0123456789abcdef0123456789abcdef.labels.npz",
    ],
)
def test_a_labels_file_elsewhere_is_never_read(good, name):
    path, doc = good
    doc["labels"]["file"] = name
    write_doc(path, doc)
    with pytest.raises(AutosaveError, match="not one this module writes"):
        Autosave.read(path)


class _Marker:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_labels_file_with_pickled_code_runs_nothing(good, tmp_path):
    path, doc = good
    marker = tmp_path / "PWNED"
    npz = path.with_name(doc["labels"]["file"])
    hostile = np.empty(1, dtype=object)
    hostile[0] = _Marker(marker)
    np.savez(npz, labels=hostile, index=hostile, values=hostile)
    with pytest.raises(AutosaveError, match="cannot be used"):
        Autosave.read(path)
    assert not marker.exists()
    # and a sidecar that is a pickle is not even parsed
    path.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(AutosaveError):
        Autosave.read(path)
    assert not marker.exists()


def test_sparse_indices_outside_the_array_are_refused(good):
    path, doc = good
    assert doc["labels"]["encoding"] == "sparse"
    npz = path.with_name(doc["labels"]["file"])
    np.savez_compressed(npz, index=np.array([10**9]), values=np.array([1], np.uint8))
    with pytest.raises(AutosaveError, match="outside the array"):
        Autosave.read(path)


# ------------------------------------------------------------------------------ restoring


def test_restore_refuses_another_image_and_changes_nothing(tmp_path, factory):
    s = busy_session(factory)
    state = Autosave(tmp_path / ("r" + SUFFIX)).write_session(s)
    other = SegmentationSession(np.zeros((3, H, W), np.uint8), predictor_factory=factory)
    with pytest.raises(AutosaveError, match="shape"):
        state.restore(other)
    rgb = SegmentationSession(np.zeros((4, H, W, 3), np.uint8), rgb=True)
    with pytest.raises(AutosaveError, match="shape"):
        state.restore(rgb)
    same_shape = SegmentationSession(make_stack() // 2, predictor_factory=factory)
    before = same_shape.labels.copy()
    with pytest.raises(AutosaveError, match="other pixels"):
        state.restore(same_shape, pixels=True)
    np.testing.assert_array_equal(same_shape.labels, before)
    assert same_shape.all_clicks() == {}
    state.restore(same_shape)  # the user insists: shapes fit, so it works


def test_restore_checks_every_click_before_changing_anything(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("k" + SUFFIX))
    saver.write_session(s)
    doc = json.loads(saver.path.read_text())
    doc["clicks"][-1]["clicks"].append([H + 10.0, 1.0, True])
    write_doc(saver.path, doc)
    fresh = SegmentationSession(make_stack(), predictor_factory=factory)
    with pytest.raises(AutosaveError, match="outside the image"):
        Autosave.read(saver.path).restore(fresh)
    assert fresh.all_clicks() == {} and not fresh.labels.any()
    doc["clicks"][-1]["key"] = [9]
    doc["clicks"][-1]["clicks"].pop()
    write_doc(saver.path, doc)
    with pytest.raises(AutosaveError, match="slice"):
        Autosave.read(saver.path).restore(fresh)
    assert fresh.all_clicks() == {} and not fresh.labels.any()


def test_discard_removes_the_sidecar_and_its_labels(tmp_path, factory):
    s = busy_session(factory)
    saver = Autosave(tmp_path / ("d" + SUFFIX))
    saver.write_session(s)
    (tmp_path / "unrelated.labels.npz").write_bytes(b"keep me")
    assert saver.exists()
    saver.discard()
    assert not saver.exists() and not list(tmp_path.glob("d*.labels.npz"))
    assert (tmp_path / "unrelated.labels.npz").exists()
    saver.discard()  # twice is fine


def test_settings_that_json_cannot_hold_are_stored_as_text(tmp_path):
    s = SegmentationSession(np.zeros((H, W), np.uint8), contrast_limits=(0.0, float("nan")))
    settings = {"model": Path("/x/m.pth"), "net": object(), "nan": float("nan"), "n": np.int64(3),
                "nested": {"t": (1, 2)}}  # fmt: skip
    saver = Autosave(tmp_path / ("s" + SUFFIX))
    saver.write_session(s, settings=settings)
    back = Autosave.read(saver.path)
    assert back.settings["model"] == "/x/m.pth" and back.settings["net"] == "<builtins.object>"
    assert back.settings["nan"] is None and back.settings["n"] == 3
    assert back.settings["nested"] == {"t": [1, 2]} and back.contrast_limits is None


# ------------------------------------------------------------------------------ where


def test_sidecar_beside_an_image_file_or_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path / "cache"))
    assert autosave_dir() == tmp_path / "cache" / "autosave"
    image = tmp_path / "cells.tif"
    image.write_bytes(b"x")
    assert sidecar_path(image) == image.with_name("cells.tif" + SUFFIX)
    assert sidecar_path(str(image)) == sidecar_path(image)
    # a folder that cannot be written: the cache
    monkeypatch.setattr(autosave_paths, "_writable_dir", lambda folder: False)
    p = sidecar_path(image)
    assert p.parent == tmp_path / "cache" / "autosave" and p.name.startswith("cells.tif-")
    # a layer name (no file): the cache, distinct names for distinct layers
    monkeypatch.undo()
    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path / "cache"))
    a, b = sidecar_path("image"), sidecar_path("image [1]")
    assert a.parent == b.parent == tmp_path / "cache" / "autosave" and a != b


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/passwd",
        "/",
        "",
        ".",
        "..",
        "a/b\\c",
        "x" * 5000,
        "名前 🐟",
        "nul\x00byte",
        "*?[",
    ],
)
def test_any_layer_name_gives_a_safe_sidecar_in_the_cache(tmp_path, name):
    p = sidecar_path(name, directory=tmp_path)
    assert p.parent == tmp_path and p.name.endswith(SUFFIX) and len(p.name) < 120
    assert "/" not in p.name and "\x00" not in p.name
    saver = Autosave(p)
    saver.write(SessionState(ImageInfo(name=name.replace("\x00", ""))))
    assert saver.exists()
    assert sidecar_path(name + "!", directory=tmp_path) != p


def test_list_autosaves_newest_first(tmp_path):
    for i, when in enumerate(["2024-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00"]):
        Autosave(tmp_path / (f"n{i}" + SUFFIX)).write(
            SessionState(ImageInfo(name=f"img{i}"), saved_at=when)
        )
    (tmp_path / ("bad" + SUFFIX)).write_text("{")
    listed = list_autosaves(tmp_path)
    assert [(p.name, n) for p, n, _ in listed[:2]] == [
        ("n1" + SUFFIX, "img1"),
        ("n0" + SUFFIX, "img0"),
    ]
    assert listed[2][1] == "" and list_autosaves(tmp_path / "none") == []


def test_the_fingerprint_reads_a_bounded_sample():
    class Counting:
        """An array that records how many elements were read."""

        def __init__(self, a):
            self.a, self.shape, self.read = a, a.shape, 0

        def __getitem__(self, index):
            out = self.a[index]
            self.read += out.size
            return out

    big = Counting(np.broadcast_to(np.uint8(7), (20000, 20000)))
    fp = image_fingerprint(big)
    assert big.read <= 70000 and len(fp) == 32
    a = np.arange(100 * 120).reshape(100, 120)
    b = a.copy()
    b[50, 60] += 1
    assert image_fingerprint(a) == image_fingerprint(a.copy())
    assert image_fingerprint(a) != image_fingerprint(a.astype(np.int32))


# ------------------------------------------------------------------------------ properties

_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    data=st.data(),
    stack=st.integers(0, 2),
    dtype=st.sampled_from(_DTYPES),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
)
def test_any_state_round_trips(tmp_path, data, stack, dtype, h, w):
    shape = (3,) * stack + (h, w)
    labels = data.draw(arrays(dtype, shape))
    keys = st.tuples(*[st.integers(0, 2)] * stack)
    coord = st.floats(-0.5, min(h, w) - 0.51, allow_nan=False)
    clicks = data.draw(
        st.dictionaries(
            keys,
            st.lists(st.builds(SessionClick, coord, coord, st.booleans()), min_size=1, max_size=4),
            max_size=3,
        )
    )
    objects = data.draw(
        st.lists(
            st.builds(
                ObjectRecord,
                st.integers(1, 2**62),
                keys,
                st.lists(st.builds(SessionClick, coord, coord, st.booleans()), max_size=3).map(
                    tuple
                ),
                st.booleans(),
                st.integers(0, 10**6),
            ),
            max_size=3,
        )  # fmt: skip
    )
    name = data.draw(st.text(max_size=20))
    state = SessionState(
        ImageInfo(name=name, shape=shape), clicks=clicks, objects=objects, labels=labels
    )
    path = tmp_path / f"prop-{stack}-{h}-{w}{SUFFIX}"
    Autosave(path).write(state)
    back = Autosave.read(path)
    assert back.clicks == {k: tuple(v) for k, v in clicks.items()}
    assert [(o.label, o.key, o.clicks, o.propagated, o.n_pixels) for o in back.objects] == [
        (o.label, o.key, o.clicks, o.propagated, o.n_pixels) for o in objects
    ]
    assert back.image.name == name and back.labels.dtype == labels.dtype
    np.testing.assert_array_equal(back.labels, labels)
