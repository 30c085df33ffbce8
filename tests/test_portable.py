"""Every clone is self-contained: no file in the repository names a path of the machine it was made on.

A user's clone has no sibling folders and another home directory, so code, tests and docs that
point at a folder beside the checkout, the checkout's parent folder or the author's home (its
dot-folders above all: caches, tool installs) work only here, or send users where nothing is.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Never scanned: what ``.gitignore`` keeps out of a clone anyway (when git cannot list the files).
UNTRACKED = {".git", ".venv", ".cache", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
             ".hypothesis", "build", "dist"}  # fmt: skip


_COMMON_FOLDERS = ("/tmp", "/var/tmp", "/home", "/opt", "/srv", "/usr/src", "/Users")


def repository_files() -> list[Path]:
    """The files a clone gets: ``git ls-files`` when this is a git checkout, else the tree minus caches."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and not UNTRACKED & set(p.relative_to(ROOT).parts)]
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


def repository_links() -> list[Path]:
    """Symbolic links a clone would get (``git ls-files`` lists them; they are no files to read)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return []
    return [ROOT / name for name in listed.decode().split("\0") if name and (ROOT / name).is_symlink()]


def links_out(links: Iterable[Path], root: Path = ROOT) -> list[tuple[str, str]]:
    """``(link, target)`` for links that point at an absolute path or out of ``root``."""
    out = []
    for link in links:
        target = os.readlink(link)
        if os.path.isabs(target) or not (link.parent / target).resolve().is_relative_to(root.resolve()):
            out.append((str(link.relative_to(root)), target))
    return out


def machine_paths() -> list[str]:
    """Strings that name this machine's layout; built at run time so this file does not contain them."""
    found = {
        os.path.join("..", "shared"),  # the sibling folder with the reference material
        "/" + "work" + "/",  # where this repository's own checkouts live
    }
    home = Path.home()
    parent = ROOT.parent
    # The folder holding this checkout, unless it is a folder everybody has (a clone in /tmp or
    # straight in the home): docs may well say "/tmp/" and the home has its own rule below.
    if parent not in {Path(parent.anchor), home, Path(tempfile.gettempdir()), *map(Path, _COMMON_FOLDERS)}:
        found.add(str(parent) + os.sep)
    if home != Path(home.anchor):
        # A dot-folder in the home is a machine path wherever it appears (~/.cache, ~/.pyenv).
        found.add(str(home) + os.sep + ".")
        if len(home.parts) > 2:
            # /home/someone/… is specific enough; a one-part home such as /root is also a common
            # word in recorded Codex bodies (its agent names are "/root", "/root/task1").
            found.add(str(home) + os.sep)
    return sorted(found)


def scan(files: Iterable[Path]) -> Iterator[tuple[str, int, str, str]]:
    """``(file, line, machine path, line text)`` for every file that names a machine path."""
    needles = machine_paths()
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files (images) name no paths
        for needle in needles:
            if needle in text:
                line = text.count("\n", 0, text.index(needle)) + 1
                yield (
                    path.name if not path.is_relative_to(ROOT) else str(path.relative_to(ROOT)),
                    line,
                    needle,
                    text.splitlines()[line - 1].strip()[:160],
                )


def test_the_scan_sees_the_repository() -> None:
    names = {str(p.relative_to(ROOT)) for p in repository_files()}
    assert {"README.md", "pyproject.toml", "tests/test_portable.py", "ccx_asgi/__main__.py"} <= names
    assert not any(name.startswith((".venv/", ".cache/", ".git/")) for name in names)


def test_no_file_names_a_machine_path() -> None:
    hits = list(scan(repository_files()))
    assert not hits, "files that name a path of this machine (a clone elsewhere has none of them):\n" + "\n".join(
        f"  {name}:{line}: {needle!r} in {context!r}" for name, line, needle, context in hits
    )


def test_no_link_points_out_of_the_repository() -> None:
    # A link to a shared install (.cache -> elsewhere) names a machine path as surely as a file does.
    assert links_out(repository_links()) == []


def test_links_out_finds_a_link_out(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    (tmp_path / "ok").symlink_to("inside")
    (tmp_path / "absolute").symlink_to(tmp_path / "inside")
    (tmp_path / "up").symlink_to("../elsewhere")
    found = links_out([tmp_path / "ok", tmp_path / "absolute", tmp_path / "up"], root=tmp_path)
    assert found == [("absolute", str(tmp_path / "inside")), ("up", "../elsewhere")]


def test_the_scan_finds_planted_paths(tmp_path: Path) -> None:
    # The check must be able to fail: each kind of machine path is reported, a clean file is not.
    clean = tmp_path / "clean.md"
    clean.write_text("Install with pip install -e '.[server]' from the checkout; see tests/fixtures/codex.\n")
    planted = []
    for n, needle in enumerate(machine_paths()):
        path = tmp_path / f"planted-{n}.md"
        path.write_text(f"line one\nread {needle}codex/README.md first\n")
        planted.append((path, needle))
    hits: dict[str, set[tuple[int, str]]] = {}
    for name, line, needle, _ in scan([clean, *(p for p, _ in planted)]):
        hits.setdefault(name, set()).add((line, needle))
    assert "clean.md" not in hits
    for path, needle in planted:
        # One needle may contain another (a checkout whose parent folder ends in the checkouts'
        # folder name yields both), so a file can be reported for several.
        assert (2, needle) in hits[path.name]
