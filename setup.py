"""One build step beyond pyproject.toml: ship ``vde_torchvision.pth`` at the root of site-packages.

Python runs a ``.pth`` file's ``import`` lines at start-up, so every process in the venv gets the torchvision
import hook (``_vde_torchvision.py``) without importing vde first. Regular wheels take it from ``build_lib``;
editable installs (``pip install -e .``) write non-package files straight into the wheel being built, which
is ``install_lib`` there. pip records the file, so an uninstall removes it.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "vde_torchvision.pth"
# Sorted after ``__editable__.*.pth``, so the editable finder is in place when this line runs; the guard keeps
# start-up quiet where the module is gone.
PTH_LINE = 'import importlib.util as u; u.find_spec("_vde_torchvision") and __import__("_vde_torchvision")\n'


class BuildWithPth(build_py):
    def run(self) -> None:
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root).mkdir(parents=True, exist_ok=True)
        Path(root, PTH_NAME).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, PTH_NAME))]


setup(cmdclass={"build_py": BuildWithPth})
