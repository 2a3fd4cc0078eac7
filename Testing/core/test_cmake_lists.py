"""GliomaSuite/CMakeLists.txt lists every file of the Slicer module, and only files that exist.

Slicer packages a scripted module with exactly the files named in its CMakeLists.txt. A module file
left out of the list still works from the source tree, then fails in the packaged extension with
``ModuleNotFoundError`` or a missing model, where users meet it first. These tests catch that in
the ordinary pytest run, and their messages give the line to add or remove.

Files of the module: ``GliomaSuite.py``, everything under ``GliomaSuiteLib/``, ``GliomaSuiteWidgets/``, ``gliomasuite/``
(the core package, with any data files it keeps beside its code) and ``Resources/``. Python files
belong in ``set(MODULE_PYTHON_SCRIPTS ...)``, all others in ``set(MODULE_PYTHON_RESOURCES ...)``.
Files git ignores, ``__pycache__`` and hidden files (``.gitkeep``) are not part of the module.
"""

import re
import subprocess
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "GliomaSuite"
CMAKE_LISTS = MODULE_DIR / "CMakeLists.txt"
SHOWN_AS = "GliomaSuite/CMakeLists.txt"
MODULE_NAME = "GliomaSuite"
SCRIPTS, RESOURCES = "MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"
MODULE_FOLDERS = (f"{MODULE_NAME}Lib", f"{MODULE_NAME}Widgets", "gliomasuite", "Resources")


def _is_module_file(relative: str) -> bool:
    parts = relative.split("/")
    if any(part.startswith(".") or part == "__pycache__" for part in parts):
        return False
    if relative.endswith(".pyc"):
        return False
    return relative == f"{MODULE_NAME}.py" or parts[0] in MODULE_FOLDERS


def module_files() -> set:
    """Paths relative to GliomaSuite/ of the files the module consists of."""
    try:
        # Tracked and not-ignored untracked files, so local build output never has to be listed.
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            cwd=MODULE_DIR, capture_output=True, check=True,
        ).stdout.decode().split("\0")
        candidates = [name for name in listing if name and (MODULE_DIR / name).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked sdist)
        files = (path for path in MODULE_DIR.rglob("*") if path.is_file())
        candidates = [path.relative_to(MODULE_DIR).as_posix() for path in files]
    return {name for name in candidates if _is_module_file(name)}


def parse_set_commands(text: str) -> dict:
    """``set(NAME value ...)`` commands as {NAME: [(value, line number), ...]}, ${VAR} expanded.

    Enough CMake for a module's file lists: unquoted values, ``#`` comments, no generator
    expressions. A later ``set`` of the same name replaces the earlier one, as in CMake.
    """
    text = re.sub(r"#[^\n]*", "", text)  # comments out, line breaks kept for line numbers
    variables = {}
    for command in re.finditer(r"\bset\s*\(\s*(\w+)([^)]*)\)", text, flags=re.IGNORECASE):
        values = []
        for token in re.finditer(r"\S+", command.group(2)):
            line = text.count("\n", 0, command.start(2) + token.start()) + 1
            whole_reference = re.fullmatch(r"\$\{(\w+)\}", token.group())
            if whole_reference and len(variables.get(whole_reference.group(1), ())) != 1:
                values.extend(variables.get(whole_reference.group(1), ()))  # a list variable
                continue
            value = re.sub(
                r"\$\{(\w+)\}",
                lambda ref: " ".join(v for v, _ in variables.get(ref.group(1), ())),
                token.group(),
            )
            values.append((value, line))
        variables[command.group(1)] = values
    return variables


def _listed():
    text = CMAKE_LISTS.read_text(encoding="utf-8")
    variables = parse_set_commands(text)
    return text, {name: variables.get(name, []) for name in (SCRIPTS, RESOURCES)}


def _spelling(relative: str) -> str:
    """How the file list writes a path: the module's own name through ${MODULE_NAME}."""
    if relative == f"{MODULE_NAME}.py" or relative.startswith(f"{MODULE_NAME}Lib/"):
        return "${MODULE_NAME}" + relative[len(MODULE_NAME):]
    if relative == f"Resources/Icons/{MODULE_NAME}.png":
        return "Resources/Icons/${MODULE_NAME}.png"
    return relative


def _where_to_add(relative: str, entries: list) -> str:
    """Where a new line goes: after the listed entry that sorts just before it."""
    before = [(value, line) for value, line in entries if value < relative]
    if not before:
        return "as the first entry"
    value, line = max(before)
    return f'after line {line} ("{_spelling(value)}")'


def test_every_module_file_is_listed():
    _, listed = _listed()
    listed_names = {name: {value for value, _ in entries} for name, entries in listed.items()}
    problems = []
    for relative in sorted(module_files()):
        block = SCRIPTS if relative.endswith(".py") else RESOURCES
        other = RESOURCES if block == SCRIPTS else SCRIPTS
        if relative in listed_names[block]:
            continue
        where = _where_to_add(relative, listed[block])
        if relative in listed_names[other]:
            problems.append(
                f"{relative} is listed in set({other} ...) but belongs in set({block} ...): move "
                f'the line "  {_spelling(relative)}" there, {where}.'
            )
        else:
            problems.append(
                f'{relative} is not listed: add the line "  {_spelling(relative)}" to '
                f"set({block} ...), {where}."
            )
    if problems:
        pytest.fail(
            f"{SHOWN_AS} must name every file of the module, or the packaged Slicer extension "
            "will lack it:\n" + "\n".join(problems),
            pytrace=False,
        )


def test_every_listed_file_exists():
    _, listed = _listed()
    problems = []
    for block, entries in listed.items():
        seen = set()
        for value, line in entries:
            if value in seen:
                problems.append(f'line {line} lists "{_spelling(value)}" a second time: delete it.')
            elif not (MODULE_DIR / value).is_file():
                problems.append(
                    f'line {line} of set({block} ...) lists "{_spelling(value)}", which does not '
                    f"exist under GliomaSuite/: delete the line, or fix the path if the file moved."
                )
            seen.add(value)
    if problems:
        pytest.fail(
            f"{SHOWN_AS}: CMake stops configuring at a listed file that does not exist:\n"
            + "\n".join(problems),
            pytrace=False,
        )


def test_lists_reach_the_module_macro():
    text, listed = _listed()
    assert listed[SCRIPTS], f"{SHOWN_AS} has no set({SCRIPTS} ...) listing the Python files."
    macro = re.search(r"slicerMacroBuildScriptedModule\s*\(([^)]*)\)", text)
    assert macro, f"{SHOWN_AS} does not call slicerMacroBuildScriptedModule(...)."
    for keyword, variable in (("SCRIPTS", SCRIPTS), ("RESOURCES", RESOURCES)):
        assert re.search(rf"\b{keyword}\s+\$\{{{variable}\}}", macro.group(1)), (
            f"{SHOWN_AS}: slicerMacroBuildScriptedModule(...) must be given "
            f"{keyword} ${{{variable}}}, or the listed files are not packaged."
        )
