"""The core package imports, every module of it, without Slicer.

The design's first rule: ``gliomasuite`` never imports ``slicer``, ``qt`` or ``ctk`` (nor the layers
built on it, ``GliomaSuiteLib`` and the ``GliomaSuite`` module), so it runs from a plain Python, a
cluster job or a pip install. In a developer's environment ``slicer`` may well be importable (the
``slicer-core`` wheel the MRML tests use), so merely importing the core proves nothing: the check
runs in a fresh interpreter whose import system refuses those names, and fails on any attempt to
import them, even one the core module catches and works around.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "GliomaSuite"
BLOCKED = ("slicer", "qt", "ctk", "GliomaSuiteLib", "GliomaSuite")

# Runs as ``python -c HARNESS <package> <blocked,names>``; exit status 0 only if every module of
# the package imported and nothing asked for a blocked name.
HARNESS = r"""
import importlib
import importlib.abc
import pkgutil
import sys
import traceback

package_name, blocked = sys.argv[1], frozenset(sys.argv[2].split(","))
attempts, failures, imported = [], [], []


def importer():
    # The innermost frame of code from the package under test, else the innermost caller
    # outside the import machinery (a third-party library the package pulled in).
    frame, outside = sys._getframe(2), None
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == package_name or name.startswith(package_name + "."):
            return f"{name} ({frame.f_code.co_filename}:{frame.f_lineno})"
        if outside is None and not name.startswith("importlib"):
            outside = f"{name} ({frame.f_code.co_filename}:{frame.f_lineno})"
        frame = frame.f_back
    return outside or "?"


class RefuseUpperLayers(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in blocked:
            return None
        attempts.append((fullname, importer()))
        raise ModuleNotFoundError(
            f"import of {fullname!r} refused: the core package must run without Slicer",
            name=fullname,
        )


for loaded in [name for name in sys.modules if name.split(".")[0] in blocked]:
    del sys.modules[loaded]
sys.meta_path.insert(0, RefuseUpperLayers())


def try_import(name):
    try:
        importlib.import_module(name)
        imported.append(name)
    except BaseException:  # SystemExit or KeyboardInterrupt at import time is a fault too
        failures.append((name, traceback.format_exc()))


try_import(package_name)
if package_name in sys.modules:
    # A subpackage that fails is still listed (onerror ignores it) and judged by try_import.
    for module in pkgutil.walk_packages(
        sys.modules[package_name].__path__, package_name + ".", onerror=lambda name: None
    ):
        try_import(module.name)

print(f"imported {len(imported)} modules: {', '.join(imported)}")
for name, by in attempts:
    print(f"FORBIDDEN: {by} imports {name}")
for name, trace in failures:
    print(f"FAILED: {name} does not import:\n{trace}")
sys.exit(1 if attempts or failures else 0)
"""


def import_everything(package: str, search_path: Path) -> subprocess.CompletedProcess:
    """Import ``package`` and all its submodules in a fresh Python that refuses BLOCKED names."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(search_path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", HARNESS, package, ",".join(BLOCKED)],
        env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=600,
    )


def test_core_imports_without_slicer():
    result = import_everything("gliomasuite", MODULE_DIR)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(
            "The core package must import without Slicer, Qt, CTK or GliomaSuiteLib "
            "(DESIGN.md, three layers). Move Slicer code to GliomaSuiteLib, or pass the value in "
            "from there.\n" + output,
            pytrace=False,
        )
    assert "imported" in result.stdout and "gliomasuite" in result.stdout, output


def test_refuses_a_core_module_that_imports_slicer(tmp_path):
    """The check itself: it must catch both a plain and a guarded import of a blocked name."""
    (tmp_path / "slicer.py").write_text("")  # importable, so only the refusal can stop it
    package = tmp_path / "fakecore"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "clean.py").write_text("import json\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "guarded.py").write_text(
        "try:\n    import slicer\nexcept ImportError:\n    slicer = None\n"
    )
    (package / "gui.py").write_text("import qt\n")

    result = import_everything("fakecore", tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FORBIDDEN: fakecore.sub.guarded" in result.stdout and "imports slicer" in result.stdout
    assert "FORBIDDEN: fakecore.gui" in result.stdout and "imports qt" in result.stdout
    assert "FAILED: fakecore.gui does not import" in result.stdout
    assert "fakecore.clean" in result.stdout.splitlines()[0]
