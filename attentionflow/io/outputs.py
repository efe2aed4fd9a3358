"""Output folders and files this tool writes, and the rule that protects everything else.

An output folder is the tool's only when its ``manifest.json`` says so: the manifest names the tool
(:data:`TOOL_ID`) and lists every file the tool wrote there with its size and SHA-256. ``--overwrite``
replaces such a folder only while it holds nothing else: a file the user added or changed, a symlink or an
empty folder of theirs makes it refuse, naming that entry. An output may never be, hold or lie inside an
input (video, frames, config, model, boxes, masks), whether that input is named by a symlink or by its
target. Folders are built in a marked hidden sibling and moved into place only when complete
(:func:`atomic_output_dir`); single files go through :func:`atomic_file`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

from attentionflow.errors import InputError, shown

__all__ = [
    "MANIFEST_NAME",
    "TOOL_ID",
    "TMP_MARKER",
    "OLD_MARKER",
    "atomic_file",
    "atomic_output_dir",
    "check_output_dir",
    "foreign_entry",
    "own_manifest",
    "probe_output_location",
    "remove_stale_siblings",
    "seal_output",
    "small_text",
]

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

#: The file every complete output folder of this tool holds (written last); only such a folder is replaced.
MANIFEST_NAME = "manifest.json"
#: The manifest's ``tool`` value: a ``manifest.json`` without it was written by someone else.
TOOL_ID = "attentionflow"


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path``; rename it onto ``path`` on success, delete it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # suffix kept for format guessing
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries(folder: Path) -> list[Path]:
    """Everything under ``folder``, sorted, without following symlinks (a link is listed, not entered)."""
    found: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        found.extend(Path(root) / name for name in (*dirs, *names))
    return sorted(found)


def _listing(folder: Path) -> dict[str, dict[str, Any]]:
    """Every regular file under ``folder`` but the manifest and markers: relative POSIX path -> size and SHA-256."""
    files: dict[str, dict[str, Any]] = {}
    for path in _entries(folder):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and rel not in (MANIFEST_NAME, TMP_MARKER, OLD_MARKER):
            files[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return files


def seal_output(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/manifest.json`` last: ``manifest`` plus the tool id and the list of every file in ``folder``
    (size and SHA-256). Returns what was written."""
    sealed = {"tool": TOOL_ID, **manifest, "files": _listing(folder)}
    with atomic_file(folder / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(sealed, indent=2), encoding="utf-8")
    return sealed


def small_text(path: Path, limit: int = 64 * 2**20) -> str | None:
    """The UTF-8 text of a regular file (not a symlink) of at most ``limit`` bytes, else None: how a file this tool
    may have written (a manifest, a report) is read before it is trusted."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > limit:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def own_manifest(folder: PathLike) -> dict[str, Any] | None:
    """The folder's manifest when this tool wrote it (its ``tool`` and ``files`` keys), else None."""
    text = small_text(Path(os.fspath(folder)) / MANIFEST_NAME)
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("tool") == TOOL_ID and isinstance(data.get("files"), dict):
        return data
    return None


def foreign_entry(folder: PathLike) -> str | None:
    """The first entry of ``folder`` (a relative path) that this tool did not write, or None when every entry is
    one its manifest lists, unchanged (same size and SHA-256). A folder without the tool's own manifest yields
    ``manifest.json``. Symlinks are never the tool's; listed files that are gone are fine."""
    folder = Path(os.fspath(folder))
    manifest = own_manifest(folder)
    if manifest is None:
        return MANIFEST_NAME
    files: dict[str, Any] = manifest["files"]
    folders = {parent.as_posix() for rel in files for parent in Path(rel).parents} - {"."}
    for path in _entries(folder):
        rel = path.relative_to(folder).as_posix()
        if rel in (MANIFEST_NAME, TMP_MARKER, OLD_MARKER):
            continue
        if path.is_symlink():
            return rel
        if path.is_dir():
            if rel not in folders:
                return rel
            continue
        entry = files.get(rel)
        if not isinstance(entry, dict) or not path.is_file() or path.stat().st_size != entry.get("bytes") \
                or _sha256(path) != entry.get("sha256"):
            return rel
    return None


_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


def _pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (ours included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _overlaps(out: Path, protected: Path) -> bool:
    """True if ``out`` is ``protected``, lies inside it, or contains it."""
    return out == protected or out in protected.parents or protected in out.parents


def _places(item: PathLike) -> set[Path]:
    """Where an input lives: its target (all links followed) and, for a symlink, the link itself."""
    given = Path(os.fspath(item))
    try:
        return {given.resolve(), Path(os.path.realpath(given.parent)) / given.name}
    except (RuntimeError, OSError) as exc:  # pathlib's "Symlink loop" (Python < 3.13), a name over the OS limit
        name = os.fspath(item)
        reason = getattr(exc, "strerror", None) or "a loop of symlinks"
        raise InputError(f"input {shown(name)}: {reason}; give a real path") from None


def check_output_dir(path: PathLike, overwrite: bool = False, protect: Sequence[PathLike] = ()) -> Path:
    """Check an output folder before any heavy work; returns its resolved path.

    ``--out`` may be a symlink to a folder: the folder it points to is the output (the link stays).
    An existing non-empty folder is replaced only when this tool wrote everything in it (:func:`foreign_entry`),
    and only with ``overwrite``. The output may never be, hold, or lie inside a ``protect`` path (the inputs:
    video or frames, config, model, boxes, masks; a symlink and its target alike), with or without
    ``overwrite``, nor be or hold the current folder (replacing it would pull the folder away from under the
    shell).

    Raises:
        InputError: a name that is not UTF-8 or too long, a dangling symlink, a file (or a path under a file),
            a non-empty folder without ``overwrite``, a folder holding anything this tool did not write, or an
            overlap with a protected path.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"output path {text!r} is not valid UTF-8; choose a UTF-8 folder name") from None
    if not text.strip():
        raise InputError("output path is empty; give a folder")
    try:
        return _check_output_dir(text, overwrite, protect)
    except RuntimeError:  # pathlib's "Symlink loop" (Python < 3.13)
        raise InputError(f"output path {shown(text)} is a loop of symlinks; give a real path") from None
    except OSError as exc:  # a name over the OS limit, a loop of symlinks, a folder we may not read
        raise InputError(f"output path {shown(text)}: "
                         f"{exc.strerror or exc}; choose another folder") from None


def _check_output_dir(text: str, overwrite: bool, protect: Sequence[PathLike]) -> Path:
    p = Path(text)
    if p.is_symlink() and not p.exists():
        raise InputError(f"output path {p} is a symlink to {os.readlink(p)}, which does not exist; "
                         f"remove the link or choose another folder")
    p = p.resolve(strict=False)
    if p.parent == p:
        raise InputError(f"output path {text} is the file-system root; choose a folder below it")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"output path {text} lies under {parent}, which is a file; choose a folder path")
            break
    if p.exists() and not p.is_dir():
        raise InputError(f"output path {text} exists and is not a folder; choose a folder path")
    cwd = Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        raise InputError(f"output folder {text} is or contains the current folder, which would be replaced; "
                         f"give a new subfolder such as outputs/edit")
    for item in protect:
        if not os.fspath(item):
            continue
        if any(_overlaps(p, q) for q in _places(item)):
            raise InputError(f"output folder {text} would overlap the input {os.fspath(item)}; choose an output "
                             f"folder outside the input and not holding it")
    if p.is_dir() and any(p.iterdir()):
        foreign = foreign_entry(p)
        if foreign == MANIFEST_NAME:
            raise InputError(f"output folder {text} exists and was not written by attentionflow (no {MANIFEST_NAME} "
                             f"of its own); it is left alone: choose another folder")
        if foreign is not None:
            raise InputError(f"output folder {text} holds {foreign}, which attentionflow did not write (or which "
                             f"changed since); --overwrite replaces only the tool's own files: move it away or "
                             f"choose another folder")
        if not overwrite:
            raise InputError(f"output folder {text} holds an earlier output; pass --overwrite to replace it")
    return p


def probe_output_location(path: PathLike) -> None:
    """Fail now, with one line, if no output folder can be created at ``path`` (read-only or unwritable place).

    Creates and removes an empty hidden folder in the nearest existing ancestor of ``path``: cheap, and the
    only way to know (root passes permission checks that a read-only file system still refuses).
    """
    target = Path(os.fspath(path)).resolve()
    base = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if base is None:
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".attentionflow-probe-", dir=base))
    except OSError as exc:
        raise InputError(f"cannot create output folder {os.fspath(path)}: {exc.strerror or exc} (in {base}); "
                         f"choose a writable location") from None


#: Marker file in a temporary folder this tool is building (``.NAME.tmp-PID``) ...
TMP_MARKER = ".attentionflow-partial"
#: ... and in a previous output it moved aside (``.NAME.old-PID``) while the new one moves into place.
OLD_MARKER = ".attentionflow-previous"


def remove_stale_siblings(final: Path) -> list[Path]:
    """Clean up after runs whose PID is gone, touching only folders that carry this tool's marker:

    - ``.NAME.tmp-PID`` (an unfinished output, :data:`TMP_MARKER`): removed;
    - ``.NAME.old-PID`` (a previous output moved aside, :data:`OLD_MARKER`): put back as ``NAME`` when the run was
      killed before the new output took its place, else removed (the new output is complete).

    A folder with such a name but without the marker is the user's and is left alone. Returns what was removed or
    restored."""
    touched: list[Path] = []
    if not final.parent.is_dir():
        return touched
    for sib in sorted(final.parent.iterdir()):
        m = _STALE.match(sib.name)
        if not (m and m.group("name") == final.name and sib.is_dir() and not sib.is_symlink()) \
                or _pid_alive(int(m.group("pid"))):
            continue
        if m.group("kind") == "tmp" and (sib / TMP_MARKER).is_file():
            shutil.rmtree(sib, ignore_errors=True)
            logger.info("removed %s, left by an interrupted run", sib)
        elif m.group("kind") == "old" and (sib / OLD_MARKER).is_file():
            if final.exists() or final.is_symlink():
                shutil.rmtree(sib, ignore_errors=True)
                logger.info("removed %s, the previous output of a run that completed", sib)
            else:
                os.replace(sib, final)
                (final / OLD_MARKER).unlink(missing_ok=True)
                logger.warning("restored %s: a run was killed while it replaced it", final)
        else:
            continue
        touched.append(sib)
    return touched


@contextmanager
def atomic_output_dir(path: PathLike, overwrite: bool = False, protect: Sequence[PathLike] = ()) -> Iterator[Path]:
    """Build an output folder in a temporary sibling and move it into place only on success.

    Enter it before heavy work: it checks the path (:func:`check_output_dir`), removes stale
    temporary siblings of dead runs, and creates the fresh hidden sibling ``.NAME.tmp-<pid>`` (so an
    unwritable location fails at once). On normal exit the sibling replaces the output folder (an old
    output is removed only then). On any exception, the temporary folder is removed and an existing
    output is left untouched.

    Raises:
        InputError: as :func:`check_output_dir`, or when the folder cannot be created.
    """
    try:  # first: a killed run's previous output comes back
        remove_stale_siblings(Path(os.path.abspath(os.fspath(path))))
    except OSError:  # a name the OS refuses: check_output_dir says so in one line
        pass
    final = check_output_dir(path, overwrite, protect)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        if tmp.exists() and (tmp / TMP_MARKER).is_file():  # left by a crashed run that had our pid
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            (tmp / TMP_MARKER).touch()
        except BaseException:  # a signal or a full disk right here: leave nothing behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        raise InputError(f"cannot create output folder {os.fspath(path)}: {exc.strerror or exc}") from None
    try:
        yield tmp
        check_output_dir(final, overwrite, protect)  # someone may have filled it while we worked
    except InputError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"output folder {os.fspath(path)} was filled by something else during the run; "
                         f"nothing was replaced") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / TMP_MARKER).unlink(missing_ok=True)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists() and (old / OLD_MARKER).is_file():
            shutil.rmtree(old)
        (final / OLD_MARKER).touch()  # so that a run killed between the two renames can put it back
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)  # put the previous output back
            (final / OLD_MARKER).unlink(missing_ok=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
