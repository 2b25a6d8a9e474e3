"""The undo history's entries: what each undoable step records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_fbrs.core.session.types import Clicks, SliceKey, _Object


@dataclass(eq=False)
class _ClicksEdit:
    key: SliceKey
    before: Clicks
    after: Clicks

    def describe(self) -> str:
        n0, n1 = len(self.before), len(self.after)
        if n1 == n0 + 1 and self.after[:n0] == self.before:
            return "click"
        if n1 == 0:
            return "reset of the clicks"
        return "click edit"


@dataclass(eq=False)
class _Group:
    entries: tuple[_ClicksEdit, ...]

    def describe(self) -> str:
        return "click edits"


@dataclass(eq=False)
class _Commit:
    key: SliceKey
    label: int
    where: tuple[np.ndarray, ...]  # (N,) intp per labels axis: the pixels written
    old_values: np.ndarray  # (N,) what was there, labels' dtype before the commit
    promoted_from: np.dtype | None
    promoted_to: np.dtype | None
    obj: _Object  # the committed object (restored by undo)
    fresh: _Object  # the empty object that replaced it (restored by redo)

    propagated: bool = False
    # (M,) intp per labels axis: pixels of ``label`` set to 0 (replaced), disjoint from where
    cleared: tuple[np.ndarray, ...] | None = None
    keys: frozenset = frozenset()  # the slices the commit wrote on
    # a propagation's settings (axis, direction, stop rules; to replay it), else None
    propagation: dict | None = None
    # pixels of ``label`` on ``keys`` right after the commit, when it made all of them (its
    # mask alone is the object there); None when the id also held other pixels there
    n_object: int | None = None

    def describe(self) -> str:
        what = "propagation" if self.propagated else "commit"
        return f"{what} of label {self.label}"


@dataclass(eq=False)
class _Reopen:
    """A committed object reopened for corrections (:meth:`edit_object`): the slice's
    current object swapped for one holding the object's clicks and id."""

    key: SliceKey
    label: int
    before: _Object
    after: _Object

    def describe(self) -> str:
        return f"edit of label {self.label}"


@dataclass(eq=False)
class _LabelsSwap:
    """The labels array replaced as a whole (a restore): undo puts the old one back."""

    before: np.ndarray
    after: np.ndarray
    what: str

    def describe(self) -> str:
        return self.what


_Entry = Any  # _ClicksEdit | _Group | _Commit | _Reopen | _LabelsSwap
