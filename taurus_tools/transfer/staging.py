"""Staging: write where only the datamover may write, read through scratch.

Analysis jobs cannot write ``/projects``; they write to scratch and ``dtcp`` the result
over.  :func:`stage_out` makes that one ``with`` block, :func:`stage_in` the reverse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from .._log import get_logger
from ..datamover.backends import StrPath
from ..datamover.datamover import Datamover
from ..errors import CommandError, StageError, TaurusToolsError
from ..datamover.wait import waitfor
from ..workspace.workspace import CacheWorkspace, Workspace

log = get_logger(__name__)

__all__ = ["stage_out", "stage_in", "tree_sizes"]


def tree_sizes(path: Path) -> Dict[str, int]:
    """Size of every file below ``path`` (or of ``path`` itself), keyed by relative path.

    Directories map to -1 so that empty ones count too; symlinks are not followed.
    """
    if not path.is_dir() or path.is_symlink():
        return {"": path.lstat().st_size}
    sizes: Dict[str, int] = {}
    for folder, dirs, files in os.walk(path):
        rel = os.path.relpath(folder, path)
        for d in dirs:
            sizes[os.path.normpath(os.path.join(rel, d))] = -1
        for f in files:
            full = os.path.join(folder, f)
            sizes[os.path.normpath(os.path.join(rel, f))] = os.lstat(full).st_size
    return sizes


def _compare(staged: Path, target: Path) -> List[str]:
    """What differs between the staged tree and the copy (missing files, other sizes)."""
    try:
        got = tree_sizes(target)
    except FileNotFoundError:
        return [f"{target} does not exist after the copy"]
    problems = []
    for rel, size in tree_sizes(staged).items():
        where = target / rel if rel else target
        if rel not in got:
            problems.append(f"missing: {where}")
        elif got[rel] != size:
            problems.append(f"size differs: {where} ({got[rel]} bytes, staged {size})")
    return problems


def _copy(dm: Datamover, src: Path, dst: Path, timeout: Optional[float], progress: bool) -> Tuple[int, str]:
    # -T: dst is the copy itself, never a folder to copy into; -- protects odd names.
    handle = dm.dtcp("-r", "-T", "--", src, dst)
    rc = waitfor(handle, timeout=timeout, progress=progress)
    return rc, handle.stderr_text


@contextlib.contextmanager
def stage_out(
    target: StrPath,
    *,
    datamover: Optional[Datamover] = None,
    workspace: Optional[Workspace] = None,
    days: int = 1,
    filesystem: Optional[str] = None,
    verify: bool = True,
    timeout: Optional[float] = None,
    progress: bool = True,
    cache: Optional[CacheWorkspace] = None,
) -> Iterator[Path]:
    """Write a file or folder in scratch; on success it is copied to ``target``.

    Parameters
    ----------
    target : path-like
        Where the result must end up (e.g. in ``/projects``): the file or folder itself.
    datamover : Datamover, optional
        How to copy; default ``Datamover()``.
    workspace : Workspace, optional
        Where to stage; default ``Workspace()`` (a fresh cache workspace is allocated).
    days, filesystem : optional
        Lifetime and filesystem of that cache workspace.
    verify : bool
        After the copy, check that every staged file exists at ``target`` with its size.
    timeout : float, optional
        Seconds to allow for the copy.
    cache : CacheWorkspace, optional
        Stage in this (allocated) cache workspace instead of a new one: in a fresh folder
        inside it, removed after a successful copy; the workspace itself stays allocated.

    Yields
    ------
    Path
        The path to write (named like ``target``, inside the cache workspace).

    Raises
    ------
    StageError
        The copy failed, timed out or did not verify.  The cache workspace is then kept
        and the error's ``staged`` attribute says where the data is.  Also raised when
        the block wrote nothing at the path it was given (an empty cache is released).

    Notes
    -----
    If the body raises, nothing is copied and the cache workspace is released.

    Examples
    --------
    >>> with stage_out("/projects/p_x/result.tif") as tmp:
    ...     imsave(tmp, img)
    """
    dest = Path(os.path.abspath(os.fspath(target)))
    dm = datamover if datamover is not None else Datamover()
    owned: Optional[CacheWorkspace] = None
    if cache is None:
        owned = CacheWorkspace(days=days, filesystem=filesystem, workspace=workspace)
        folder = owned.path
    else:
        folder = Path(tempfile.mkdtemp(prefix=".tt-stage-", dir=cache.path))

    def done() -> None:  # the staged data is not needed any more
        if owned is not None:
            owned.cleanup()
        else:
            shutil.rmtree(folder, ignore_errors=True)

    staged = folder / dest.name
    try:
        yield staged
    except BaseException as exc:
        if owned is not None:
            owned.__exit__(type(exc), exc, exc.__traceback__)
        else:
            done()
        raise
    kept = f"; the staged data is kept at {staged}"
    if not staged.exists() and not staged.is_symlink():
        message = f"nothing was written to {staged}, so nothing was copied to {dest}"
        others = sorted(p.name for p in folder.iterdir() if p != staged)
        if others:  # written under another name (numpy.save adds ".npy", ...): keep it
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            kept = f" (the folder {folder} is kept: it holds other files: {shown})"
            raise StageError(message + kept, str(staged), str(dest))
        done()
        raise StageError(message, str(staged), str(dest))
    try:
        rc, err = _copy(dm, staged, dest, timeout, progress)
    except (TaurusToolsError, TimeoutError) as exc:
        raise StageError(f"copying to {dest} did not finish: {exc}{kept}", str(staged), str(dest)) from exc
    if rc != 0:
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise StageError(f"copying to {dest} failed with exit code {rc}: {tail}{kept}", str(staged), str(dest))
    if verify:
        problems = _compare(staged, dest)
        if problems:
            shown = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            raise StageError(f"the copy at {dest} does not match: {shown}{kept}", str(staged), str(dest))
    log.info("staged %s to %s", staged, dest)
    done()


@contextlib.contextmanager
def stage_in(
    source: StrPath,
    *,
    datamover: Optional[Datamover] = None,
    workspace: Optional[Workspace] = None,
    days: int = 1,
    filesystem: Optional[str] = None,
    timeout: Optional[float] = None,
    progress: bool = True,
) -> Iterator[Path]:
    """Copy a file or folder into a fresh cache workspace for reading; release it after.

    Raises
    ------
    CommandError
        The copy failed (the cache workspace is released: it held nothing of yours).
    """
    src = Path(os.path.abspath(os.fspath(source)))
    dm = datamover if datamover is not None else Datamover()
    with CacheWorkspace(days=days, filesystem=filesystem, workspace=workspace) as cache:
        local = cache.path / src.name
        rc, err = _copy(dm, src, local, timeout, progress)
        if rc != 0:
            raise CommandError(rc, ["dtcp", "-r", "-T", "--", str(src), str(local)], stderr=err)
        yield local
