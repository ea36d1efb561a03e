"""The wheel built from pyproject.toml holds the function's package and nothing else: no
simulator, local stack, benchmarks or tests (they live beside cancel_handler, not in it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UV = REPO / ".tools" / "bin" / "uv"  # installed by the Makefile
LOCAL_TOOLS = ("dli_simulator", "devstack", "bench", "tests")


def _build_command(out_dir: Path) -> list[str]:
    uv = str(UV) if UV.is_file() else shutil.which("uv")
    if uv is not None:
        return [uv, "build", "--wheel", "--quiet", "--out-dir", str(out_dir)]
    try:
        import pip  # noqa: F401
    except ImportError:
        pytest.skip("neither uv nor pip is available to build the wheel")
    return [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), "."]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file names in the wheel, built from a copy of the working tree (so the build's
    own ``build/`` and ``*.egg-info`` stay out of the repository)."""
    source = tmp_path_factory.mktemp("source") / "repo"
    ignore = shutil.ignore_patterns(
        ".git", ".venv", ".tools", "*_cache", ".hypothesis", "build", "*.egg-info", "__pycache__"
    )
    shutil.copytree(REPO, source, ignore=ignore)
    out_dir = tmp_path_factory.mktemp("wheel")
    subprocess.run(_build_command(out_dir), cwd=source, check=True, timeout=300)
    [wheel] = out_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_only_cancel_handler(wheel_files: list[str]) -> None:
    tops = {name.split("/", 1)[0] for name in wheel_files}
    [dist_info] = [top for top in tops if top.endswith(".dist-info")]

    assert tops == {"cancel_handler", dist_info}
    assert not [name for name in wheel_files if name.split("/", 1)[0] in LOCAL_TOOLS]


def test_the_wheel_holds_every_module_of_cancel_handler(wheel_files: list[str]) -> None:
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "cancel_handler").rglob("*.py")}

    assert sources and sources == {name for name in wheel_files if name.endswith(".py")}
