"""The package shell: manifest, entry points, import hygiene, sample data, configuration."""

from __future__ import annotations

import ast
import configparser
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "src" / "napari_fbrs"
MANIFEST = PKG / "napari.yaml"
GUI_MODULES = (
    "napari",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "magicgui",
    "superqt",
    "vispy",
)


def _run_json(code: str):
    """Run ``code`` in a fresh interpreter; its last printed line is read as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _modules_after(code: str) -> set[str]:
    """Top-level names in ``sys.modules`` of a fresh interpreter after running ``code``."""
    probe = "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    return set(_run_json(code + probe))


# -------------------------------------------------------------------------- napari manifest


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_file(MANIFEST)


def test_manifest_is_valid_and_complete():
    manifest = _manifest()  # schema validation happens here (pydantic)
    assert manifest.name == "napari-fbrs"
    commands = {c.id for c in manifest.contributions.commands}
    assert {
        "napari-fbrs.make_widget",
        "napari-fbrs.sample_photo",
        "napari-fbrs.sample_nuclei",
    } <= commands
    assert {s.key for s in manifest.contributions.sample_data} == {"photo", "nuclei"}
    assert [w.command for w in manifest.contributions.widgets] == ["napari-fbrs.make_widget"]
    # every contribution refers to a declared command
    referenced = [w.command for w in manifest.contributions.widgets]
    referenced += [s.command for s in manifest.contributions.sample_data]
    assert set(referenced) <= commands


def test_manifest_is_registered_through_the_entry_point():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="napari.manifest")
        if ep.name == "napari-fbrs"
    ]
    assert entry.value == "napari_fbrs:napari.yaml"
    from npe2 import PluginManifest

    assert PluginManifest.from_distribution("napari-fbrs").name == "napari-fbrs"


def _python_names() -> list:
    return [
        pytest.param(command.python_name, id=command.id)
        for command in _manifest().contributions.commands
    ]


@pytest.mark.parametrize("python_name", _python_names())
def test_every_python_name_imports(python_name):
    module_name, _, attr = python_name.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr))


def test_napari_opens_the_sample_data_through_npe2():
    from npe2 import PluginManager

    pm = PluginManager()
    pm.discover(include_npe1=False)
    pm.activate("napari-fbrs")
    layers = {}
    for sample in pm.get_manifest("napari-fbrs").contributions.sample_data:
        (layer,) = sample.open(_registry=pm.commands)
        layers[sample.key] = layer
    photo, photo_kwargs, photo_type = layers["photo"]
    assert photo.shape == (300, 450, 3) and photo.dtype == np.uint8
    assert photo_type == "image" and photo_kwargs["rgb"] is True
    nuclei, nuclei_kwargs, nuclei_type = layers["nuclei"]
    assert nuclei.shape == (256, 256) and nuclei.dtype == np.uint16
    assert nuclei_type == "image"
    low, high = nuclei_kwargs["contrast_limits"]
    assert nuclei.min() <= low < high <= nuclei.max()


# -------------------------------------------------------------------------- import hygiene


def test_import_napari_fbrs_imports_neither_torch_nor_qt_nor_napari():
    assert not _modules_after("import napari_fbrs") & {"torch", *GUI_MODULES}


def test_building_the_command_line_imports_neither_torch_nor_qt():
    # `napari-fbrs --version` / `--help` stay fast: subcommand modules import lazily
    loaded = _modules_after("from napari_fbrs.cli import build_parser\nbuild_parser()")
    assert not loaded & {"torch", *GUI_MODULES}


def test_no_core_module_imports_napari_or_qt():
    result = _run_json(
        "import importlib, json, pkgutil, sys, traceback\n"
        "import napari_fbrs.core as core\n"
        "names, errors = [], {}\n"
        "for info in pkgutil.walk_packages(core.__path__, 'napari_fbrs.core.'):\n"
        "    names.append(info.name)\n"
        "    try:\n"
        "        importlib.import_module(info.name)\n"
        "    except Exception:\n"
        "        errors[info.name] = traceback.format_exc(limit=-1)\n"
        "tops = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps({'names': names, 'errors': errors, 'tops': tops}))"
    )
    assert "napari_fbrs.core.predictor" in result["names"]
    assert result["errors"] == {}
    assert not set(result["tops"]) & set(GUI_MODULES)


def _imported_modules(tree: ast.AST) -> set[str]:
    """Absolute module names that a parsed source imports, statically or by import_module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_core_sources_import_neither_napari_nor_qt():
    sources = sorted((PKG / "core").rglob("*.py"))
    assert PKG / "core" / "predictor.py" in sources
    offenders = {}
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        bad = {m for m in _imported_modules(tree) if m.split(".")[0] in GUI_MODULES}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_the_source_scan_sees_gui_imports_in_every_form():
    # the scan itself: each way of importing Qt or napari is caught, look-alikes are not
    code = (
        "import qtpy.QtWidgets\n"
        "from napari.layers import Labels\n"
        "def f():\n"
        "    from magicgui import magicgui\n"
        "    return importlib.import_module('PyQt5.QtCore')\n"
        "import napari_fbrs.core.zoo\n"
        "from . import napari\n"
    )
    found = {m.split(".")[0] for m in _imported_modules(ast.parse(code))}
    assert found & set(GUI_MODULES) == {"qtpy", "napari", "magicgui", "PyQt5"}


def test_the_public_api_resolves_lazily():
    import napari_fbrs as nf

    for name in nf.__all__:
        assert getattr(nf, name) is not None, name
    assert set(nf.MODES) == {"NoBRS", "RGB-BRS", "DistMap-BRS", "f-BRS-A", "f-BRS-B", "f-BRS-C"}
    with pytest.raises(AttributeError, match="no_such_name"):
        nf.no_such_name  # noqa: B018


def test_version_is_the_installed_one():
    import napari_fbrs

    assert napari_fbrs.__version__ == importlib.metadata.version("napari-fbrs")


# -------------------------------------------------------------------------- sample data


def test_sample_files_are_small_and_shipped_as_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    globs = cfg["options.package_data"]["napari_fbrs"].split()
    files = sorted((PKG / "data").iterdir())
    assert {f.name for f in files} >= {"photo.png", "nuclei.tif"}
    for path in files:
        rel = path.relative_to(PKG).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"
        assert path.stat().st_size < 300 * 1024, f"{rel} is larger than 300 KB"


def test_every_source_and_data_folder_is_a_configured_package(monkeypatch):
    # A folder that holds only data (data/, weights/) is a package only for namespace
    # discovery; left out of `packages`, setuptools warns that it will stop shipping it.
    setupcfg = pytest.importorskip("setuptools.config.setupcfg")
    monkeypatch.chdir(REPO)  # `where = src` is relative to the project root
    options = setupcfg.read_configuration("setup.cfg")["options"]
    packages = set(options["packages"])
    folders = {
        ".".join(path.relative_to(REPO / "src").parts)
        for path in [PKG, *PKG.rglob("*")]
        if path.is_dir() and path.name != "__pycache__" and any(path.iterdir())
    }
    assert folders - packages == set()
    assert packages - folders == set()
    data_folders = {
        "napari_fbrs." + glob.split("/")[0]
        for glob in options["package_data"]["napari_fbrs"]
        if "/" in glob
    }
    assert data_folders == {"napari_fbrs.data", "napari_fbrs.weights"}


def test_ci_tests_the_oldest_napari_that_setup_cfg_admits():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines()]
    (bound,) = [r for r in requires if r.startswith("napari")]
    minimum = re.fullmatch(r"napari>=(\d+\.\d+)", bound)
    assert minimum, f"napari needs a lower bound in setup.cfg, got {bound!r}"
    oldest = re.search(r"OLDEST_NAPARI:=(\d+\.\d+)\.\d+", (REPO / ".ci" / "run").read_text())
    assert oldest and oldest.group(1) == minimum.group(1)
    readme = (REPO / "README.md").read_text()
    assert f"napari {minimum.group(1)} or newer" in readme


def test_load_sample_rejects_unknown_names():
    from napari_fbrs._sample_data import load_sample

    with pytest.raises(KeyError, match="photo"):
        load_sample("cat")


def test_the_generator_script_reproduces_the_shipped_samples():
    from napari_fbrs._sample_data import load_sample

    spec = importlib.util.spec_from_file_location(
        "make_sample_data", REPO / "tools" / "make_sample_data.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, made in (("photo", script.make_photo()), ("nuclei", script.make_nuclei())):
        shipped = load_sample(name)
        assert made.shape == shipped.shape and made.dtype == shipped.dtype, name
        # allow one grey level for rounding differences between library versions
        assert np.abs(made.astype(np.int64) - shipped).max() <= 1, name


# -------------------------------------------------------------------------- configuration


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    return cfg


def _requirement_names(text: str) -> dict[str, str]:
    """``name -> full requirement`` of a setup.cfg requirement list (comments are dropped)."""
    from packaging.requirements import Requirement

    reqs = [Requirement(line) for line in text.strip().splitlines() if line.strip()]
    return {req.name.lower(): str(req) for req in reqs}


def test_each_configuration_file_keeps_to_its_role():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert set(pyproject) == {"build-system", "tool"}
    assert set(pyproject["tool"]) <= {"ruff", "pytest"}
    cfg = _setup_cfg()
    assert not [s for s in cfg.sections() if s.startswith(("tool:", "flake8", "pytest"))]
    tox = configparser.ConfigParser()
    tox.read(REPO / "tox.ini", encoding="utf-8")
    assert not [s for s in tox.sections() if s in ("pytest", "flake8") or s.startswith("tool:")]
    assert "QT_QPA_PLATFORM = offscreen" in tox["testenv"]["setenv"]
    assert tox["testenv"]["extras"].strip() == "testing"


def test_requirements_follow_the_napari_hub_rules():
    cfg = _setup_cfg()
    install = _requirement_names(cfg["options"]["install_requires"])
    expected = {"napari", "magicgui", "qtpy", "npe2", "torch", "numpy", "scipy",
                "scikit-image", "tifffile", "pooch", "pillow", "matplotlib"}  # fmt: skip
    assert set(install) == expected
    assert install["torch"] == "torch>=2.1"  # a range: the CPU build is installed first
    qt_bindings = {"pyqt5", "pyqt6", "pyside2", "pyside6"}
    assert not set(install) & qt_bindings
    testing = _requirement_names(cfg["options.extras_require"]["testing"])
    assert {"pytest", "pytest-qt"} <= set(testing)
    assert len(set(testing) & qt_bindings) == 1
    assert "Framework :: napari" in cfg["metadata"]["classifiers"]
    assert (REPO / cfg["metadata"]["license_files"].strip()).is_file()
    assert cfg["metadata"]["version"].strip() == "attr: napari_fbrs._version.__version__"
    entry_points = cfg["options.entry_points"]
    assert "napari-fbrs = napari_fbrs.cli:main" in entry_points["console_scripts"]
    assert "napari-fbrs = napari_fbrs:napari.yaml" in entry_points["napari.manifest"]


def test_the_console_script_is_installed():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="console_scripts")
        if ep.name == "napari-fbrs"
    ]
    assert entry.load() is importlib.import_module("napari_fbrs.cli").main


# -------------------------------------------------------------------------- README, CI, docs


def _quick_start_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.DOTALL)


def _ci_commands() -> list[str]:
    """The non-comment lines of ``.ci/run``, stripped."""
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]


def test_readme_quick_start_has_two_commands_and_ci_runs_the_second():
    blocks = _quick_start_blocks()
    assert len(blocks) == 2
    first = [part.strip() for part in blocks[0].replace("\\\n", " ").split("&&")]
    torch_step = first.index("pip install torch==2.13.0")  # CPU torch before the package
    install_step = next(i for i, part in enumerate(first) if part.startswith("pip install -e"))
    segment_step = next(i for i, p in enumerate(first) if p.startswith("napari-fbrs segment"))
    assert torch_step < install_step < segment_step
    assert first[segment_step].startswith("napari-fbrs segment sample:photo --click")
    assert "--out " in first[segment_step] and "--model" not in first[segment_step]

    test_command = blocks[1].strip().split("&&")[-1].strip()
    assert test_command == "QT_QPA_PLATFORM=offscreen python -m pytest"
    ci = _ci_commands()
    assert any(test_command in line for line in ci)
    ci_text = "\n".join(ci)
    assert "set -euo pipefail" in ci_text
    assert ci_text.index("pip install torch==2.13.0") < ci_text.index("pip install -e")
    assert ci_text.index("pip install -e") < ci_text.index(test_command)
    assert "ruff check" in ci_text and "ruff format --check" in ci_text


def test_the_ci_script_is_valid_bash():
    proc = subprocess.run(
        ["bash", "-n", str(REPO / ".ci" / "run")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


# documents that other work streams write; a link to one of them may precede the file
PENDING_DOCS: set[str] = set()


def _relative_links(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # links in code are not links
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    targets += re.findall(r'src="([^"]+)"', text)
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t) and t.split("#")[0]]


def test_readme_and_docs_link_to_files_that_exist():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert {"index.md", "cli.md", "api.md", "models.md"} <= {p.name for p in pages}
    broken = []
    for page in pages:
        for target in _relative_links(page):
            resolved = (page.parent / target).resolve()
            rel = resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else None
            if not resolved.exists() and rel not in PENDING_DOCS:
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []


def test_docs_index_links_every_document():
    linked = {Path(t).as_posix() for t in _relative_links(REPO / "docs" / "index.md")}
    wanted = {"user_guide.md", "cli.md", "api.md", "models.md", "evaluation.md",
              "benchmarks.md", "model_card.md"}  # fmt: skip
    assert wanted <= linked


def test_cli_reference_documents_every_subcommand_and_segment_option():
    from napari_fbrs.cli import SUBCOMMANDS, build_parser

    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in SUBCOMMANDS:
        assert f"## `napari-fbrs {name}`" in text, name
    parser = build_parser()
    (subparsers,) = parser._subparsers._group_actions
    segment = subparsers.choices["segment"]
    options = [o for a in segment._actions for o in a.option_strings if o.startswith("--")]
    assert "--click" in options and "--gt" in options
    missing = [o for o in options if o != "--help" and f"`{o}" not in text]
    assert missing == []


def test_readme_has_the_sections_a_newcomer_needs():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    for wanted in ("Quick start", "Installation", "Using it in napari", "Model zoo",
                   "Citation", "Licence"):  # fmt: skip
        assert wanted in headings, wanted
    assert "docs/images/widget.png" in text
    assert "napari -w napari-fbrs" in text
    assert "f-BRS: Rethinking Backpropagating Refinement for Interactive Segmentation" in text


# -------------------------------------------------------------------------- CLI error paths


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m napari_fbrs ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "napari_fbrs", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, command: str, *needles: str):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"napari-fbrs {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert proc.stdout == ""


@pytest.fixture
def cli_dir(tmp_path, monkeypatch):
    """An empty working folder with its own empty model cache."""
    monkeypatch.setenv("NAPARI_FBRS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_cli_missing_image_file(cli_dir):
    proc = _cli("segment", "no_such.png", "--click", "10,10", "--out", "m.tif", cwd=cli_dir)
    _assert_one_line_error(proc, "segment", "not found", "no_such.png")
    assert not (cli_dir / "m.tif").exists()


@pytest.mark.parametrize("click", ["10;20", "10", "a,b", "10,20,30", "--10,20", "10,-20"])
def test_cli_bad_click_syntax(cli_dir, click):
    proc = _cli("segment", "sample:photo", f"--click={click}", "--out", "m.tif", cwd=cli_dir)
    _assert_one_line_error(proc, "segment", "bad click", repr(click), "Y,X")


def test_cli_unknown_model(cli_dir):
    proc = _cli(
        "segment", "sample:photo", "--click", "10,10", "--model", "no-such-model",
        "--out", "m.tif", cwd=cli_dir,
    )  # fmt: skip
    _assert_one_line_error(proc, "segment", "unknown model 'no-such-model'", "fbrs-lite")


def test_cli_missing_model_file(cli_dir):
    proc = _cli(
        "segment", "sample:photo", "--click", "10,10", "--model", "weights/gone.pt",
        "--out", "m.tif", cwd=cli_dir,
    )  # fmt: skip
    _assert_one_line_error(proc, "segment", "model file not found", "gone.pt")


def test_cli_unknown_sample_lists_the_samples(cli_dir):
    proc = _cli("segment", "sample:cat", "--click", "1,1", "--out", "m.tif", cwd=cli_dir)
    _assert_one_line_error(proc, "segment", "sample:photo", "sample:nuclei")


def test_cli_models_download_of_an_unknown_name(cli_dir):
    proc = _cli("models", "download", "no-such-model", cwd=cli_dir)
    _assert_one_line_error(proc, "models", "unknown model 'no-such-model'")


def test_python_dash_m_prints_the_version(cli_dir):
    import napari_fbrs

    proc = _cli("--version", cwd=cli_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"napari-fbrs {napari_fbrs.__version__}"


def test_a_missing_subcommand_module_says_it_is_not_available(monkeypatch, capsys):
    from napari_fbrs import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "future", "napari_fbrs.cli._no_such_module")
    assert cli.main(["future"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "napari-fbrs future: error: this subcommand is not available yet in this version"
    ]


def test_user_error_messages_are_printed_on_one_line(monkeypatch, capsys):
    from napari_fbrs import cli
    from napari_fbrs.cli import segment

    def fail(args):
        raise cli.UserError("first line\n  second line")

    monkeypatch.setattr(segment, "run", fail)  # add_parser binds the module's run
    assert cli.main(["segment", "x.png", "--out", "m.tif"]) == 2
    assert capsys.readouterr().err == "napari-fbrs segment: error: first line second line\n"
