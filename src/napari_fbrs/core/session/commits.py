"""Commits: writing a finished object into the labels as one undo step, and listing them."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_fbrs.core.session.entries import _Commit
from napari_fbrs.core.session.labels import promoted_dtype
from napari_fbrs.core.session.types import CommitInfo, CommittedObject, SliceKey, _Object


class _CommitsMixin:
    """Commits of :class:`SegmentationSession` (labels checks come from ``_LabelsMixin``,
    the history from ``_HistoryMixin``)."""

    def commit(
        self,
        key: SliceKey = (),
        label: int | None = None,
        overwrite: bool = False,
        replace: bool | None = None,
    ) -> CommitInfo:
        """Write slice ``key``'s current object into the labels (an undo step).

        The object's clicks are cleared (a new object starts; the predictor settings of
        the factory apply to it).

        Parameters
        ----------
        key : SliceKey
            The slice.
        label : int, optional
            The id to write; default the object's pinned id (:meth:`set_object_label`),
            else :meth:`next_label`.
        overwrite : bool
            Also write over pixels that hold another label; by default only background
            (0) pixels are written, so no existing label is ever lost.
        replace : bool, optional
            First clear the id's old pixels on this slice (they become 0 unless the new
            mask covers them). Default: when the id is the object's pinned one.

        Returns
        -------
        CommitInfo
            What was written.

        Raises
        ------
        ValueError
            No clicks, a preview not computed for the current clicks, an empty mask, a
            mask that lies entirely on other labels (without ``overwrite``), or a label
            below 1. Nothing is modified.
        OverflowError
            The label fits no integer dtype.
        """
        key = self.check_key(key)
        obj, mask = self._finished_mask(key)
        label, replace = self._resolve_label(obj, label, replace)
        rows, cols = np.nonzero(mask)
        where = tuple(np.full(rows.size, k, dtype=np.intp) for k in key) + (rows, cols)
        return self._commit_where(
            key, obj, where, label, overwrite, propagated=False, keys=(key,), replace=replace
        )

    def _resolve_label(
        self, obj: _Object, label: int | None, replace: bool | None
    ) -> tuple[int, bool]:
        pinned = label is None and obj.label is not None
        if label is None:
            label = obj.label if obj.label is not None else self.next_label()
        label = int(label)
        if label < 1:
            raise ValueError(f"label ids start at 1, got {label}")
        return label, pinned if replace is None else bool(replace)

    def _finished_mask(self, key: SliceKey) -> tuple[_Object, np.ndarray]:
        obj = self._objects.get(key)
        if obj is None or not obj.clicks:
            raise ValueError("there is no object to finish on this slice: click on it first")
        if obj.prob is None or obj.prob_clicks != obj.clicks:
            raise ValueError("the preview is not computed for the current clicks yet")
        mask = obj.prob >= self._prob_thresh
        if not mask.any():
            raise ValueError("the current mask is empty: nothing to commit")
        return obj, mask

    def _commit_where(
        self,
        key: SliceKey,
        obj: _Object,
        where: tuple[np.ndarray, ...],
        label: int,
        overwrite: bool,
        propagated: bool,
        keys: Iterable[SliceKey],
        replace: bool = False,
        propagation: dict | None = None,
    ) -> CommitInfo:
        """Write ``label`` at the full-array indices ``where`` (one undo step) and start a
        new object on ``key``; with ``replace``, first clear ``label`` on the slices
        ``keys``. Raises before modifying anything."""
        self._check_labels(self._labels)
        keys = frozenset(keys)
        labels = self._labels
        target = promoted_dtype(labels.dtype, label)
        if target == labels.dtype:  # a promotion writes into a new (writable) copy
            self._check_writable(labels)
        full_where = where
        old = labels[where]
        kept = 0
        if not overwrite:
            keep = old == 0
            if replace:
                kept = int(np.count_nonzero(old == label))
            where = tuple(w[keep] for w in where)
            old = old[keep]
        cleared = None
        if replace and (labels.dtype == np.bool_ or label <= np.iinfo(labels.dtype).max):
            parts = []
            for k in sorted(keys):
                found = np.nonzero(labels[k] == label)
                if found[0].size:
                    parts.append(tuple(np.full(found[0].size, i, dtype=np.intp) for i in k) + found)
            if parts:
                old_pixels = tuple(np.concatenate(a) for a in zip(*parts, strict=True))
                if full_where[0].size:  # old pixels that the new mask covers stay
                    again = np.isin(
                        np.ravel_multi_index(old_pixels, labels.shape),
                        np.ravel_multi_index(full_where, labels.shape),
                    )
                    old_pixels = tuple(a[~again] for a in old_pixels)
                if old_pixels[0].size:
                    cleared = old_pixels
        if where[0].size == 0 and kept == 0 and cleared is None:
            raise ValueError(
                "the object lies entirely on existing labels; tick 'overwrite' to replace them"
            )
        promoted_from = None
        if target != labels.dtype:
            promoted_from = labels.dtype
            labels = labels.astype(target)
        if cleared is not None:
            labels[cleared] = 0
        labels[where] = label
        self._labels = labels
        n_object = sum(int(np.count_nonzero(labels[k] == label)) for k in keys)
        fresh = _Object()
        entry = _Commit(
            key=key,
            label=label,
            where=where,
            old_values=old,
            promoted_from=promoted_from,
            promoted_to=target if promoted_from is not None else None,
            obj=obj,
            fresh=fresh,
            propagated=propagated,
            cleared=cleared,
            keys=keys,
            propagation=propagation,
            n_object=n_object if n_object == where[0].size + kept else None,
        )
        self._objects[key] = fresh
        self._push(entry)
        self._release_committed_predictors()
        n_cleared = 0 if cleared is None else int(cleared[0].size)
        return CommitInfo(key, label, int(where[0].size), promoted_from, n_cleared)

    def commit_object(
        self,
        made: CommittedObject,
        source_labels: np.ndarray,
        *,
        label: int | None = None,
        overwrite: bool = False,
    ) -> CommitInfo:
        """Write an object made in another session of the same image (an undo step, with
        its clicks, as if it had been committed here).

        The panel's *Load objects...* makes a clicks file's objects on a worker, in a
        :meth:`blank_copy`, and adopts each with this. The object then is like one
        committed here: undo takes it out and brings its clicks back on its slice, it is
        listed by :meth:`commits` and :meth:`reproducible_objects` (with its propagation
        settings), :meth:`edit_object` reopens it. Its slice must have no unfinished
        object (clicks not committed), which undo would otherwise replace.

        Parameters
        ----------
        made : CommittedObject
            The other session's record (:meth:`commits`).
        source_labels : numpy.ndarray
            That session's labels, :attr:`labels_shape`: the object's pixels are those of
            ``made.label`` on ``made.keys``.
        label : int, optional
            The id to write here; default ``made.label``.
        overwrite : bool
            As in :meth:`commit`: by default only background (0) pixels are written.

        Returns
        -------
        CommitInfo
            What was written.

        Raises
        ------
        ValueError
            ``source_labels`` of another shape, a slice or click outside this image, an
            unfinished object on its slice, no pixels of ``made.label`` there, a label
            below 1, or an object that lies entirely on other labels (without
            ``overwrite``). Nothing is modified.
        OverflowError
            The label fits no integer dtype.
        """
        if getattr(source_labels, "shape", None) != self.labels_shape:
            raise ValueError(
                f"source labels of shape {getattr(source_labels, 'shape', None)} do not match "
                f"the image: expected {self.labels_shape}"
            )
        key = self.check_key(made.key)
        keys = [self.check_key(k) for k in made.keys] or [key]
        clicks = tuple(self._make_click(c.y, c.x, c.positive) for c in made.clicks)
        parts = []
        for k in keys:
            rows, cols = np.nonzero(np.asarray(source_labels[k]) == made.label)
            parts.append(tuple(np.full(rows.size, i, dtype=np.intp) for i in k) + (rows, cols))
        where = tuple(np.concatenate(axis) for axis in zip(*parts, strict=True))
        if where[0].size == 0:
            raise ValueError(f"object {made.label} has no pixels in the source labels")
        label = int(made.label if label is None else label)
        if label < 1:
            raise ValueError(f"label ids start at 1, got {label}")
        current = self._objects.get(key)
        if current is not None and current.clicks:
            where_text = f"slice {', '.join(str(i) for i in key)}" if key else "the image"
            raise ValueError(f"{where_text} has an unfinished object: finish or clear it first")
        return self._commit_where(
            key,
            _Object(clicks=clicks),
            where,
            label,
            overwrite,
            propagated=bool(made.propagated),
            keys=keys,
            propagation=dict(made.propagation) if made.propagation is not None else None,
        )

    def _release_committed_predictors(self, keep: int = 2) -> None:
        """Keep predictors and probability maps only in the last ``keep`` commits of the
        history (memory); an undo of an older commit recomputes its preview from its
        clicks (:meth:`request`)."""
        commits = [e for e in self._done if isinstance(e, _Commit)]
        for entry in commits[:-keep] if keep else commits:
            obj = entry.obj
            obj.predictor = None
            obj.redo_dirty = False
            obj.prob, obj.prob_clicks = None, ()
        self._live = [o for o in self._live if o.predictor is not None]

    def commits(self, undone: bool = False) -> list[CommittedObject]:
        """The commits in the undo history, with the clicks that made each (provenance).

        Parameters
        ----------
        undone : bool
            List the undone commits (those :meth:`redo` would bring back, next first)
            instead of the applied ones.

        Returns
        -------
        list of CommittedObject
            Applied commits oldest first (only those still in the bounded history,
            ``max_history``).
        """
        entries = reversed(self._undone) if undone else self._done
        return [committed_object(e) for e in entries if isinstance(e, _Commit)]


def committed_object(entry: _Commit) -> CommittedObject:
    """The public record of a commit entry of the history."""
    return CommittedObject(
        key=tuple(int(k) for k in entry.key),
        label=int(entry.label),
        clicks=tuple(entry.obj.clicks),
        propagated=bool(entry.propagated),
        n_pixels=int(entry.where[0].size) if entry.where else 0,
        replaced=entry.cleared is not None,
        keys=tuple(sorted(entry.keys)),
        propagation=dict(entry.propagation) if entry.propagation is not None else None,
        n_object=entry.n_object,
    )
