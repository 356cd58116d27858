"""The torchvision workaround reaches a user's plain ``import torchvision`` / ``open_clip`` / ``diffusers``.

The installed package ships ``vde_torchvision.pth`` (setup.py); Python runs it at start-up. These tests build
the real wheels, put their ``.pth`` in a site directory the way an install does, and import the libraries
in a fresh interpreter that never imports vde.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "filters", "captioners", "shards", "stiv", "dashboard")
PLAIN_IMPORTS = "import torchvision, open_clip; from diffusers import AutoencoderKL; import torchvision.transforms.v2"
HOOK = "_BeforeTorchvision"


def _python(code: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # a source checkout, as the editable finder maps it
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked and untracked-not-ignored), so the build never writes into the repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the source files")
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheels")
    for hook in ("build_wheel", "build_editable"):  # one process each: setuptools keeps state between builds
        code = f"from setuptools import build_meta; import sys; build_meta.{hook}(sys.argv[1])"
        done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    return {"regular": next(p for p in out.glob("*.whl") if ".editable" not in p.name),
            "editable": next(out.glob("*.editable-*.whl"))}


@pytest.mark.parametrize("kind", ["regular", "editable"])
def test_both_wheels_ship_the_pth_at_the_root(wheels: dict[str, Path], kind: str) -> None:
    with zipfile.ZipFile(wheels[kind]) as whl:
        names = whl.namelist()
        record = whl.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
        pth = whl.read("vde_torchvision.pth").decode()
    assert "vde_torchvision.pth" in names and "vde_torchvision.pth," in record  # pip installs and uninstalls it
    assert pth.startswith("import ") and "_vde_torchvision" in pth and pth.count("\n") == 1
    if kind == "regular":
        assert "_vde_torchvision.py" in names


def test_the_pth_makes_plain_imports_work_without_vde(wheels: dict[str, Path], tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    with zipfile.ZipFile(wheels["editable"]) as whl:
        (site_dir / "vde_torchvision.pth").write_bytes(whl.read("vde_torchvision.pth"))
    check = "import sys; assert not any(m.split('.')[0] in %r for m in sys.modules), 'vde was imported'" % (PACKAGES,)
    fixed = _python(f"import site; site.addsitedir({str(site_dir)!r}); {PLAIN_IMPORTS}; {check}", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    # Without the .pth, in a process whose site-packages may hold an installed one (-S skips it): the plain
    # import fails exactly where the compiled ops cannot load, so the test above shows the fix, not luck.
    site_packages = sysconfig.get_paths()["purelib"]
    bare = _python(f"import sys; sys.path.append({site_packages!r}); import torchvision", "-S", cwd=tmp_path)
    if bare.returncode == 0:
        pytest.skip("torchvision's compiled ops load here (CUDA torch): nothing to work around")
    assert "torchvision::nms" in bare.stderr


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_any_vde_package_applies_it(package: str, tmp_path: Path) -> None:
    site_packages = sysconfig.get_paths()["purelib"]
    code = (f"import sys; sys.path.append({site_packages!r}); import {package}; "
            f"assert any(type(f).__name__ == {HOOK!r} for f in sys.meta_path); assert 'torch' not in sys.modules")
    done = _python(code, "-S", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_vde_first_then_plain_imports(tmp_path: Path) -> None:
    site_packages = sysconfig.get_paths()["purelib"]
    done = _python(f"import sys; sys.path.append({site_packages!r}); import stiv; import torchvision.transforms.v2", "-S",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_fresh_editable_install(tmp_path: Path) -> None:
    """``pip install -e .`` as .ci/run does it, into a new venv that borrows this one's dependencies."""
    src = _source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    new_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(new_site, "000-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(src)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert Path(new_site, "vde_torchvision.pth").is_file()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(py), "-c", PLAIN_IMPORTS], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
