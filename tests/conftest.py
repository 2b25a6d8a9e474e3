"""Shared test fixtures: where ``../shared`` is, and skipping cleanly without it."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    """``NAPARI_FBRS_SHARED`` if set, else ``../shared`` beside the repository."""
    env = os.environ.get("NAPARI_FBRS_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not (root / "README.md").is_file():
        pytest.skip(f"../shared is not present at {root} (set NAPARI_FBRS_SHARED to its path)")
    return root


@pytest.fixture(scope="session")
def conformance_dir(shared_dir: Path) -> Path:
    return shared_dir / "conformance"


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """Point the cache (downloads, autosave sidecars) and the panel's settings at fresh
    folders for every test, so tests never read or litter the user's own."""
    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path_factory.mktemp("cache")))
    # the panel's remembered settings: never the user's, never left behind
    monkeypatch.setenv("NAPARI_FBRS_CONFIG", str(tmp_path_factory.mktemp("config")))


# napari modules that query OpenGL limits when layers are built
_GL_QUERY_MODULES = (
    "napari._vispy.utils.gl",
    "napari._vispy.layers.image",
    "napari._vispy.layers.base",
    "napari._vispy.layers.labels",
    "napari._vispy.canvas",
)


@pytest.fixture
def no_opengl_queries(monkeypatch):
    """Let napari build its layers on a canvas without an OpenGL context (Qt offscreen).

    Nothing is drawn in the widget tests; only napari's queries of GL limits would fail.
    """
    for name in _GL_QUERY_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "get_gl_extensions"):
            monkeypatch.setattr(module, "get_gl_extensions", lambda: "")
        if hasattr(module, "get_max_texture_sizes"):
            monkeypatch.setattr(module, "get_max_texture_sizes", lambda: (16384, 2048))
