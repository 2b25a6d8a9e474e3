"""Readers of interactive-segmentation benchmarks and of microscopy label images.

Every reader is a lazy sequence of :class:`Sample` (one per object): files are listed when
the reader is made, and read when a sample is accessed. Layouts (``ROOT`` is the dataset
folder)::

    GrabCut    ROOT/data_GT/<name>.<ext>   ROOT/boundary_GT/<name>.bmp  (255 object, 128 ignored)
    Berkeley   ROOT/images/<name>.<ext>    ROOT/masks/<name>.png        (non-zero = object)
    DAVIS      ROOT/img/<name>.<ext>       ROOT/gt/<name>.png           (non-zero = object)
    COCO_MVal  ROOT/img/<name>.<ext>       ROOT/gt/<name>.png           (non-zero = object)
    SBD        ROOT/img/<name>.jpg         ROOT/inst/<name>.mat         (each instance, val.txt)
    generic    a folder of images + a folder of masks or instance-label images, or one
               image + one label image; each label id is one object (a z-stack and its
               label stack: each label on the plane where it is largest)

Masks are paired with images by file stem (``cell1.tif`` with ``cell1.png`` or
``cell1_labels.tif``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np

__all__ = [
    "BENCHMARKS",
    "DatasetError",
    "LabelImageDataset",
    "MaskFolderDataset",
    "ObjectDataset",
    "SBDDataset",
    "Sample",
    "open_dataset",
    "read_image",
    "read_mask",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Mask files may carry one of these after the image's stem.
MASK_STEM_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_seg")
# Sub-folder names a generic dataset folder may use, in order of preference.
IMAGE_DIR_NAMES = ("images", "image", "img", "imgs", "raw")
MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "gt", "annotations")

MaskKind = Literal["binary", "grabcut", "auto"]


class DatasetError(ValueError):
    """A dataset cannot be found or read; the message is one line meant for the user."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One object to segment.

    Attributes
    ----------
    image : np.ndarray
        ``(H, W)`` or ``(H, W, 3|4)``, the file's dtype (uint8 photos, uint16 microscopy).
        Objects of the same image share this array (the runner then skips ``set_image``).
    gt : np.ndarray
        ``(H, W)`` bool, the object.
    ignore : np.ndarray or None
        ``(H, W)`` bool, pixels the metric and the simulated user ignore (GrabCut's band).
    name : str
        The image's stem, plus ``#<label id>`` for objects of an instance-label image.
    """

    image: np.ndarray
    gt: np.ndarray
    ignore: np.ndarray | None
    name: str


# ---------------------------------------------------------------------------- file reading


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as ``(H, W)`` (grey) or ``(H, W, C)`` (colour, channels last).

    TIFF files are read with tifffile (a ``(C, H, W)`` stack of 3 or 4 channels is moved to
    channels-last); everything else with Pillow. Palette images become RGB; a grey image with
    alpha loses its alpha.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = np.squeeze(tifffile.imread(path))
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = np.moveaxis(arr, 0, -1)
    else:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode in ("1", "LA"):
                im = im.convert("L")
            arr = np.asarray(im)
    if arr.ndim not in (2, 3):
        raise DatasetError(f"{path} is not a 2D image (array shape {arr.shape})")
    return arr


def read_mask(
    path: str | os.PathLike[str], palette: Literal["index", "colour"] = "index"
) -> np.ndarray:
    """Read a mask or label image with its raw values.

    SBD ``.mat`` files give their ``GTinst.Segmentation`` instance map.

    Parameters
    ----------
    path : path
        ``.png``/``.bmp``/``.tif``/... mask or label image, or an SBD ``.mat`` file.
    palette : {"index", "colour"}
        What a palette (``P`` mode) image gives: its indices (label images, the default) or
        its colours (``(H, W)`` when the palette is grey, ``(H, W, 3)`` otherwise), which is
        what "non-zero is object" and GrabCut's grey levels mean.

    Returns
    -------
    np.ndarray
        ``(H, W)`` integer or bool, ``(Z, H, W)`` for a label stack, or ``(H, W, C)`` for
        colour masks.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return _read_sbd_instances(path)
    if suffix in (".tif", ".tiff"):
        import tifffile

        return np.squeeze(tifffile.imread(path))
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("P", "PA") and palette == "colour":
            rgb = np.asarray(im.convert("RGB"))
            grey = (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
            return np.ascontiguousarray(rgb[..., 0]) if grey else rgb
        return np.asarray(im)


def _read_stack(path: Path) -> np.ndarray:
    """A ``(Z, H, W[, C])`` image stack as stored (TIFF), or a 2D image via :func:`read_image`."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return np.squeeze(tifffile.imread(path))
    return read_image(path)


def _read_sbd_instances(path: Path) -> np.ndarray:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
        return np.asarray(mat["GTinst"].Segmentation)
    except (KeyError, AttributeError, ValueError, OSError) as exc:
        raise DatasetError(f"{path} is not an SBD instance file (GTinst.Segmentation)") from exc


def _flatten_mask(mask: np.ndarray) -> np.ndarray:
    """Colour masks become one channel (the maximum over channels, alpha dropped)."""
    if mask.ndim == 3:
        channels = mask[..., :3] if mask.shape[-1] == 4 else mask
        return channels.max(axis=-1)
    return mask


def _object_ids(labels: np.ndarray) -> list[int]:
    ids = np.unique(labels)
    return [int(i) for i in ids if i != 0]


def _is_label_image(mask: np.ndarray) -> bool:
    """More than one distinct non-zero value in a one-channel integer image."""
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        return False
    return len(_object_ids(mask)) > 1


# ---------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class _Entry:
    image_path: Path
    mask_path: Path
    label: int | None  # None: the whole mask is one object
    plane: int | None = None  # z index in a label stack; None for 2D images


class ObjectDataset(Sequence[Sample]):
    """A lazy sequence of :class:`Sample`, one per object.

    Subclasses implement :meth:`_build_index` (list the objects) and may override
    :meth:`_gt_and_ignore` (turn a mask into the object) and :meth:`_load` (read the files of
    one entry). The index is built on first use.

    Raises
    ------
    DatasetError
        On access, when a mask does not fit its image or holds no object pixel.
    """

    #: What palette images give to :func:`read_mask`: indices (labels) or colours.
    palette: Literal["index", "colour"] = "index"

    def __init__(self, name: str):
        self.name = name
        self._entries: list[_Entry] | None = None
        self._cache_key: tuple[Path, Path] | None = None
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self._planes: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # subclass interface
    def _build_index(self) -> list[_Entry]:
        raise NotImplementedError

    def _gt_and_ignore(
        self, mask: np.ndarray, entry: _Entry
    ) -> tuple[np.ndarray, np.ndarray | None]:
        mask = _flatten_mask(mask)
        if entry.label is None:
            return mask > 0, None
        return mask == entry.label, None

    def _load(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        """``(image, mask)`` of an entry's files, whole (all planes of a stack)."""
        return read_image(entry.image_path), read_mask(entry.mask_path, self.palette)

    # sequence protocol
    @property
    def entries(self) -> list[_Entry]:
        if self._entries is None:
            self._entries = self._build_index()
        return self._entries

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        entry = self.entries[index]
        image, mask = self._read_pair(entry)
        gt, ignore = self._gt_and_ignore(mask, entry)
        if gt.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {entry.mask_path.name} is {gt.shape[0]}x{gt.shape[1]} but image "
                f"{entry.image_path.name} is {image.shape[0]}x{image.shape[1]}"
            )
        name = entry.image_path.stem
        if entry.label is not None:
            name = f"{name}#{entry.label}"
        if entry.plane is not None:
            name = f"{name}@z{entry.plane}"
        counted = gt if ignore is None else gt & ~ignore
        if not counted.any():
            raise DatasetError(
                f"{name}: the mask {entry.mask_path.name} has no object pixel"
                + ("" if ignore is None else " outside the ignored ones")
            )
        return Sample(image=image, gt=gt, ignore=ignore, name=name)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def _read_pair(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        # Objects of one label image come in a row: keep the last pair so they share the
        # same image array (and, in a stack, the same plane array).
        key = (entry.image_path, entry.mask_path)
        if self._cache_key != key or self._cache is None:
            self._cache = self._load(entry)
            self._cache_key = key
            self._planes = {}
        if entry.plane is None:
            return self._cache
        if entry.plane not in self._planes:
            image, mask = self._cache
            self._planes[entry.plane] = (image[entry.plane], mask[entry.plane])
        return self._planes[entry.plane]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


def _pair_by_stem(
    images: list[Path], masks: list[Path]
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(image, mask) pairs matched by stem, and the images without a mask."""
    by_stem: dict[str, Path] = {}
    for m in masks:
        by_stem.setdefault(m.stem, m)
    pairs, unpaired = [], []
    for img in images:
        match = next(
            (by_stem[img.stem + s] for s in MASK_STEM_SUFFIXES if img.stem + s in by_stem), None
        )
        if match is None:
            unpaired.append(img)
        else:
            pairs.append((img, match))
    return pairs, unpaired


class MaskFolderDataset(ObjectDataset):
    """A folder of images and a folder of masks paired by file stem.

    Parameters
    ----------
    image_dir, mask_dir : path
        The two folders.
    kind : {"binary", "grabcut", "auto"}
        ``"binary"``: one object per mask, the pixels that are not black (the maximum over
        colour channels is non-zero; palette masks are read as colours).
        ``"grabcut"``: one object per mask, grey ``> 128`` object, ``== 128`` ignored.
        ``"auto"``: a one-channel integer mask with more than one distinct non-zero value
        (palette masks: index) is an instance-label image, one object per label id;
        otherwise a binary mask. The masks are read once when the index is built.
    name : str or None
        Dataset name for reports; default the parent folder's name.

    Attributes
    ----------
    unpaired : list of Path
        Images for which no mask was found (they are skipped).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        mask_dir: str | os.PathLike[str],
        kind: MaskKind = "binary",
        name: str | None = None,
    ):
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir)
        if kind not in ("binary", "grabcut", "auto"):
            raise ValueError(f"kind must be 'binary', 'grabcut' or 'auto', not {kind!r}")
        self.kind = kind
        self.palette = "index" if kind == "auto" else "colour"
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                raise DatasetError(f"folder not found: {folder}")
        super().__init__(name or self.image_dir.resolve().parent.name)
        self.unpaired: list[Path] = []

    def _build_index(self) -> list[_Entry]:
        pairs, self.unpaired = _pair_by_stem(
            _list_images(self.image_dir), _list_images(self.mask_dir)
        )
        if not pairs:
            raise DatasetError(
                f"no image in {self.image_dir} has a mask with the same name in {self.mask_dir}"
            )
        entries: list[_Entry] = []
        for image_path, mask_path in pairs:
            if self.kind == "auto":
                mask = read_mask(mask_path)
                if _is_label_image(mask):
                    entries += [_Entry(image_path, mask_path, i) for i in _object_ids(mask)]
                    continue
            entries.append(_Entry(image_path, mask_path, None))
        return entries

    def _gt_and_ignore(
        self, mask: np.ndarray, entry: _Entry
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "grabcut":
            mask = _flatten_mask(mask)
            ignore = mask == 128
            return mask > 128, (ignore if ignore.any() else None)
        return super()._gt_and_ignore(mask, entry)


class LabelImageDataset(ObjectDataset):
    """One image and its instance-label image; every non-zero label id is one object.

    A ``(Z, H, W)`` label stack with its ``(Z, H, W[, C])`` image stack gives one object per
    label id too, evaluated in 2D on the z-plane where that label has the most pixels (the
    first such plane on a tie); objects are then ordered by plane, then label id. With
    ``planes="all"`` (what training uses) every z-plane where a label has at least
    ``min_plane_pixels`` pixels is an object of its own (its largest plane always is).

    Parameters
    ----------
    image_path, labels_path : path
        ``(H, W[, C])`` image and ``(H, W)`` integer label image (0 = background), or
        ``(Z, H, W[, C])`` and ``(Z, H, W)`` stacks (TIFF).
    name : str or None
        Default: the image's stem without a trailing ``_image``/``_img``/``_raw``.
    planes : {"largest", "all"}
        Which z-planes of a label stack become objects.
    min_plane_pixels : int
        With ``planes="all"``: the fewest pixels of a label on a plane for that plane to
        count (smaller cross-sections, such as an object's out-of-focus tips, are left out).
    """

    def __init__(
        self,
        image_path: str | os.PathLike[str],
        labels_path: str | os.PathLike[str],
        name: str | None = None,
        planes: Literal["largest", "all"] = "largest",
        min_plane_pixels: int = 16,
    ):
        if planes not in ("largest", "all"):
            raise ValueError(f"planes must be 'largest' or 'all', not {planes!r}")
        self.planes = planes
        self.min_plane_pixels = int(min_plane_pixels)
        self.image_path = Path(image_path)
        self.labels_path = Path(labels_path)
        for path in (self.image_path, self.labels_path):
            if not path.is_file():
                raise DatasetError(f"file not found: {path}")
        if name is None:
            name = self.image_path.stem
            for suffix in ("_image", "_img", "_raw"):
                if name.endswith(suffix) and len(name) > len(suffix):
                    name = name[: -len(suffix)]
                    break
        super().__init__(name)
        self.is_stack = False

    def _build_index(self) -> list[_Entry]:
        labels = read_mask(self.labels_path)
        if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(
                f"{self.labels_path} is not a 2D or 3D integer label image "
                f"(shape {labels.shape}, dtype {labels.dtype})"
            )
        ids = _object_ids(labels)
        if not ids:
            raise DatasetError(f"{self.labels_path} has no labelled object")
        self.is_stack = labels.ndim == 3
        if not self.is_stack:
            return [_Entry(self.image_path, self.labels_path, i) for i in ids]
        from scipy import ndimage

        if labels.min() < 0:
            raise DatasetError(f"{self.labels_path} has negative label ids")
        entries = []
        boxes = ndimage.find_objects(labels)
        for i in ids:
            box = boxes[i - 1]
            per_plane = (labels[box] == i).sum(axis=(1, 2))
            largest = int(np.argmax(per_plane))
            chosen = [largest]
            if self.planes == "all":
                chosen = [
                    k for k, n in enumerate(per_plane) if n >= self.min_plane_pixels or k == largest
                ]
            for k in chosen:
                entries.append(_Entry(self.image_path, self.labels_path, i, box[0].start + k))
        # objects of one plane in a row, so that they share the plane's image array
        return sorted(entries, key=lambda e: (e.plane, e.label))

    def _load(self, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        if entry.plane is None:
            return super()._load(entry)
        image = _read_stack(entry.image_path)
        labels = read_mask(entry.mask_path)
        if image.shape[: labels.ndim] != labels.shape:
            raise DatasetError(
                f"label stack {entry.mask_path.name} has shape {labels.shape} but image "
                f"{entry.image_path.name} has shape {image.shape}"
            )
        return image, labels


class SBDDataset(ObjectDataset):
    """The SBD benchmark: every instance of every listed image is one object.

    Parameters
    ----------
    root : path
        Folder with ``img/<name>.jpg``, ``inst/<name>.mat`` and ``<split>.txt``.
    split : str
        Image list to use (``val`` for the f-BRS numbers); all ``.mat`` files when the list
        file is absent.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "val", name: str = "SBD"):
        self.root = Path(root)
        self.split = split
        for sub in ("img", "inst"):
            if not (self.root / sub).is_dir():
                raise DatasetError(f"folder not found: {self.root / sub}")
        super().__init__(name)

    def _build_index(self) -> list[_Entry]:
        split_file = self.root / f"{self.split}.txt"
        if split_file.is_file():
            stems = [s.strip() for s in split_file.read_text().split() if s.strip()]
        else:
            stems = sorted(p.stem for p in (self.root / "inst").glob("*.mat"))
        entries: list[_Entry] = []
        for stem in stems:
            mat = self.root / "inst" / f"{stem}.mat"
            img = self.root / "img" / f"{stem}.jpg"
            if not (mat.is_file() and img.is_file()):
                raise DatasetError(f"SBD image {stem!r} lacks {img.name} or {mat.name}")
            entries += [_Entry(img, mat, i) for i in _object_ids(read_mask(mat))]
        if not entries:
            raise DatasetError(f"no SBD instances found under {self.root}")
        return entries


# ---------------------------------------------------------------------------- opening by name


def _grabcut(root: Path, name: str) -> ObjectDataset:
    return MaskFolderDataset(root / "data_GT", root / "boundary_GT", "grabcut", name)


def _berkeley(root: Path, name: str) -> ObjectDataset:
    return MaskFolderDataset(root / "images", root / "masks", "binary", name)


def _img_gt(root: Path, name: str) -> ObjectDataset:
    return MaskFolderDataset(root / "img", root / "gt", "binary", name)


def _sbd(root: Path, name: str) -> ObjectDataset:
    return SBDDataset(root, name=name)


#: Benchmark name -> (reader factory, sub-folders that identify its layout).
BENCHMARKS = {
    "GrabCut": (_grabcut, ("data_GT", "boundary_GT")),
    "Berkeley": (_berkeley, ("images", "masks")),
    "DAVIS": (_img_gt, ("img", "gt")),
    "COCO_MVal": (_img_gt, ("img", "gt")),
    "SBD": (_sbd, ("img", "inst")),
}

_LABEL_SIBLINGS = ("labels", "label", "masks", "mask")


def _find_labels_for(image_path: Path) -> Path | None:
    """``x_image.tif`` -> an existing ``x_labels.tif`` (or label/masks/mask) beside it.

    The last ``image`` in the file's stem is replaced; the label file may have any image
    suffix.
    """
    stem = image_path.stem
    if "image" not in stem:
        return None
    head, _, tail = stem.rpartition("image")
    siblings = sorted(p for p in image_path.parent.iterdir() if p.is_file())
    for word in _LABEL_SIBLINGS:
        wanted = head + word + tail
        for candidate in siblings:
            if candidate.stem == wanted and candidate.suffix.lower() in IMAGE_SUFFIXES:
                return candidate
    return None


def _open_folder(folder: Path) -> ObjectDataset:
    subdirs = {p.name for p in folder.iterdir() if p.is_dir()}
    if {"data_GT", "boundary_GT"} <= subdirs:
        return _grabcut(folder, folder.name)
    if {"img", "inst"} <= subdirs:
        return _sbd(folder, folder.name)
    # a benchmark folder given by path reads as the benchmark (binary masks, not labels)
    for key, (factory, layout) in BENCHMARKS.items():
        if folder.resolve().name.lower() == key.lower() and set(layout) <= subdirs:
            return factory(folder, key)
    image_dir = next((d for d in IMAGE_DIR_NAMES if d in subdirs), None)
    mask_dir = next((d for d in MASK_DIR_NAMES if d in subdirs), None)
    if image_dir is None or mask_dir is None:
        raise DatasetError(
            f"{folder} has no images/masks sub-folders (expected one of "
            f"{', '.join(IMAGE_DIR_NAMES)} and one of {', '.join(MASK_DIR_NAMES)})"
        )
    return MaskFolderDataset(folder / image_dir, folder / mask_dir, "auto", folder.name)


def open_dataset(
    spec: str,
    data_root: str | os.PathLike[str] | None = None,
    stack_planes: Literal["largest", "all"] = "largest",
) -> ObjectDataset:
    """Open a dataset from a benchmark name or a path.

    Parameters
    ----------
    spec : str
        One of

        - a benchmark name (:data:`BENCHMARKS`, any case): the folder ``data_root/<Name>``;
        - a folder: a benchmark layout (detected by its sub-folders) or a generic
          ``images``/``masks`` (or ``labels``) pair of sub-folders;
        - ``IMAGES_DIR+MASKS_DIR``: two folders (generic);
        - ``IMAGE+LABELS``: an image file and its instance-label image;
        - an image file whose name contains ``image``, with the label image beside it
          under the same name with ``labels`` (or ``label``, ``masks``, ``mask``).
    data_root : path or None
        Where benchmark names are looked up.
    stack_planes : {"largest", "all"}
        For a label stack: one object per label on its largest z-plane (evaluation), or
        one per plane it covers (training); see :class:`LabelImageDataset`.

    Raises
    ------
    DatasetError
        Nothing usable at the given place; the message says what was expected.
    """
    canonical = {k.lower(): k for k in BENCHMARKS}
    key = canonical.get(spec.lower())
    if key is not None and not Path(spec).exists():
        if data_root is None:
            raise DatasetError(f"no data root given to look up the benchmark {key}")
        root = Path(data_root) / key
        if not root.is_dir():
            raise DatasetError(
                f"{key} not found at {root}; run 'napari-fbrs datasets download {key}' "
                "or pass --data-root"
            )
        factory, _ = BENCHMARKS[key]
        return factory(root, key)
    if "+" in spec and not Path(spec).exists():
        first, second = (Path(s) for s in spec.split("+", 1))
        if first.is_dir() and second.is_dir():
            return MaskFolderDataset(first, second, "auto", first.resolve().parent.name)
        if first.is_file() and second.is_file():
            return LabelImageDataset(first, second, planes=stack_planes)
        raise DatasetError(f"{spec}: expected IMAGE+LABELS files or IMAGES_DIR+MASKS_DIR folders")
    path = Path(spec)
    if path.is_dir():
        return _open_folder(path)
    if path.is_file():
        labels = _find_labels_for(path)
        if labels is None:
            raise DatasetError(f"no label image found beside {path}; give both as IMAGE+LABELS")
        return LabelImageDataset(path, labels, planes=stack_planes)
    known = ", ".join(BENCHMARKS)
    raise DatasetError(f"{spec!r} is neither a known dataset ({known}) nor an existing path")
