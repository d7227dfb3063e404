"""Outputs that are never lost: check an `--out` before any work, then write folders and files atomically.

A folder is written into a unique hidden sibling (`.<name>.tmp-XXXXXXXX`) while this run holds an exclusive lock
on `.<name>.lock`, then swapped in: the old folder is renamed aside (`.<name>.old-XXXXXXXX`), the new one renamed
in, and only then is the old one deleted, so at every moment one complete version is on disk. A run killed between
the two renames leaves the old version aside; the next run for the same output puts it back.

Every folder written here holds a `.t2v_unlearn` marker; `--overwrite` replaces only folders that carry it (or an
`unlearn.json`/`eval_config.json`, from before the marker existed), so it never deletes a folder of someone's files.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MARKER = ".t2v_unlearn"
LEGACY_MARKERS = {"unlearn.json": "checkpoint", "eval_config.json": "eval"}  # outputs from before the marker
# failures that mean "bad input": a work folder this run created holds nothing worth resuming after them
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError)


class OutputError(ValueError):
    """An output path that cannot, or must not, be written."""


def output_kind(folder: Path) -> str | None:
    """The kind of output this tool wrote in `folder` ("checkpoint", "eval", ...); "" if empty, None if not ours."""
    if (folder / MARKER).is_file():
        try:
            return str(json.loads((folder / MARKER).read_text()).get("kind", ""))
        except (ValueError, AttributeError):
            return ""  # a damaged marker is still this tool's marker
    kinds = [kind for name, kind in LEGACY_MARKERS.items() if (folder / name).is_file()]
    if kinds:
        return kinds[0]
    return "" if not any(folder.iterdir()) else None


def _unsafe_target(given: Path) -> bool:
    """`.`, `..`, the working folder, one of its parents, or the filesystem root."""
    if given.name in ("", ".", ".."):
        return True
    resolved, cwd = given.resolve(), Path.cwd().resolve()
    return resolved == Path(resolved.anchor) or resolved == cwd or resolved in cwd.parents


def _os_reason(error: OSError, target: Path) -> str:
    """What an OSError met while probing `target`'s parent means, and what to do."""
    if error.errno == errno.ENAMETOOLONG:
        return (f"the name is too long for this filesystem ({len(os.fsencode(target.name))} bytes, and the "
                "temporary sibling needs about 15 more): choose a shorter --out")  # fmt: skip
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in reversed(target.parents) if p.exists() and not p.is_dir()), None)
        where = f"{blocker} is a file, not a folder" if blocker else "a part of its path is a file, not a folder"
        return f"{where}: choose another --out"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{error.strerror} in {error.filename or target.parent}: choose a folder you can write to"
    return f"{error.strerror or error}: choose another --out"


def _check_writable(target: Path, out) -> None:
    """Create `target`'s parent and a unique folder in it, then remove both; an OSError becomes an OutputError."""
    missing = [p for p in target.parents if not os.path.lexists(p)]  # deepest first
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.probe-"))
    except OSError as error:
        raise OutputError(f"cannot write output folder {out}: {_os_reason(error, target)}") from None
    finally:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()


def validate_output(out: str | os.PathLike, overwrite: bool = False, kind: str | None = None) -> Path:
    """Check an output folder before any work starts; returns it as an absolute path.

    Refuses an existing `out` without `overwrite` (FileExistsError); with it, refuses a file, a symbolic link,
    `.`, `..`, the working folder or a parent of it, the root, a folder this tool did not write, and one holding
    another `kind` of output (an eval result over a checkpoint), all with an OutputError. A parent that cannot be
    created or written (read-only, under a file, a name too long) is refused too.
    """
    given = Path(out).expanduser()
    target = Path(os.path.abspath(given))
    if _unsafe_target(given):
        raise OutputError(f"output folder {out} is the working folder, one of its parents, or the filesystem root; "
                          "an output needs a folder of its own: pass e.g. --out results/run1")  # fmt: skip
    if os.path.lexists(target):
        if not overwrite:
            raise FileExistsError(f"output folder {out} already exists; pass --overwrite or choose another --out")
        if target.is_symlink() or not target.is_dir():
            what = "a symbolic link" if target.is_symlink() else "a file"
            raise OutputError(f"output folder {out} is {what}; --overwrite replaces only folders t2v-unlearn wrote: "
                              "choose another --out")  # fmt: skip
        theirs = output_kind(target)
        if theirs is None:
            raise OutputError(f"--overwrite refuses to replace {out}: it holds files t2v-unlearn did not write "
                              f"(no {MARKER} marker); choose another --out, or delete the folder yourself if it can "
                              "go")  # fmt: skip
        if kind and theirs and theirs != kind:
            raise OutputError(f"--overwrite refuses to replace {out}: it holds a t2v-unlearn output of kind "
                              f"{theirs!r}, and this writes {kind!r}; choose another --out")  # fmt: skip
    _check_writable(target, out)
    return target


# --- folders ---------------------------------------------------------------------------------------------------


def _siblings(target: Path, tag: str) -> list[Path]:
    """This output's own `.<name>.<tag>-XXXXXXXX` siblings (mkdtemp names), oldest first."""
    pattern = re.compile(re.escape(f".{target.name}.{tag}-") + r"[A-Za-z0-9_]{8}")
    found = [p for p in target.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def _recover(target: Path) -> None:
    """Under the lock, tidy up after killed runs: put back an old version left aside, drop dead temporaries."""
    for stale in _siblings(target, "tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    asides = _siblings(target, "old")
    if asides and not os.path.lexists(target):
        os.rename(asides.pop(), target)  # killed between "old aside" and "new in": the old one is the output
    for superseded in asides:
        shutil.rmtree(superseded, ignore_errors=True)


@contextlib.contextmanager
def _exclusive_lock(target: Path, out) -> Iterator[None]:
    """Hold `fcntl.flock` on `.<name>.lock` beside `target`; a second run gets an OutputError at once."""
    path = target.with_name(f".{target.name}.lock")
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"another run is writing {out} (it holds {path}); wait for it to finish or choose "
                              "another --out") from None  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)  # the run before us removed the lock file as we opened it: lock the new one
    else:
        raise OutputError(f"could not lock {path}: other runs keep writing {out}; try again")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked, so no run can hold a lock on a removed file
        os.close(fd)


def _write_marker(folder: Path, kind: str) -> None:
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    payload = {"tool": "t2v_unlearn", "kind": kind, "created": created}
    (folder / MARKER).write_text(json.dumps(payload, sort_keys=True) + "\n")


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target`; an old `target` is renamed aside first and deleted only once the new one is in."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    aside = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-")
    os.rename(target, aside)  # onto the empty unique folder: atomic, and no name is guessed
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(aside, target)  # if this fails too, the old version waits aside for the next run's _recover
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    out: str | os.PathLike, overwrite: bool = False, *, kind: str = "output", work: str | os.PathLike | None = None
) -> Iterator[Path]:
    """Yield a temporary folder to write an output into; on success it replaces `out` in one step.

    On any exception (KeyboardInterrupt included) the temporary folder is removed, the old `out` is left as it was,
    and the exception goes on. A second run for the same `out` meanwhile gets an OutputError.

    Args:
        out: the output folder; checked by `validate_output` before anything is written.
        overwrite: replace an existing `out` that this tool wrote, as the same `kind` of output.
        kind: recorded in the folder's `.t2v_unlearn` marker ("checkpoint", "generate", "eval", ...).
        work: a fixed work folder to use instead of a unique temporary one, for outputs that can resume: it is kept
            on failure, except when this run created it and failed on bad input (`INPUT_ERRORS`).
    """
    target = validate_output(out, overwrite, kind)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target, out):
        _recover(target)
        validate_output(out, overwrite, kind)  # again under the lock: another run may have written `out` meanwhile
        if work is None:
            tmp, created = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-")), True
        else:
            tmp, created = Path(work), not os.path.lexists(work)
            tmp.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
            _write_marker(tmp, kind)
            _swap_in(tmp, target)
        except BaseException as error:
            if work is None or (created and isinstance(error, INPUT_ERRORS)):
                shutil.rmtree(tmp, ignore_errors=True)
            raise


# --- files -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) to write to; on success it replaces `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.tmp-", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0o600 would make the result private
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and `os.replace`: readers see the old or the new file."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode())
