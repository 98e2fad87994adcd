"""Bring back the newest complete checkpoint pass: ``restore(dest, path)``.

Reads the newest manifest at ``dest`` (a manifest present is a complete pass: it is written
last) and writes each of its files to ``path``, from the ``data/`` folder of the pass that
sent it: every file as that pass saw it, never a mix with a later, unfinished pass.  Each
file arrives under a temporary name in its folder, is checked (size and MD5 against the
manifest), gets its modification time, and is then renamed into place.  A file already in
``path`` with the manifest's size and modification time is left as it is, so a restore
that was interrupted can be run again.  Files in ``path`` that the pass does not hold are
left alone.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Optional

from .._log import get_logger
from ..errors import CheckpointError
from .destinations import destination_for, remove_quietly
from .manifest import Manifest, data_name, manifest_name

__all__ = ["restore"]

log = get_logger(__name__)


def restore(dest: str, path: "str | os.PathLike[str]", *, number: Optional[int] = None, s3: Any = None) -> Manifest:
    """Restore pass ``number`` (default: the newest complete one) from ``dest`` into ``path``.

    Returns the manifest restored.  Raises :class:`CheckpointError` when ``dest`` holds no
    complete pass, or naming the files that could not be restored (the others are in place).
    """
    destination = destination_for(dest, s3=s3)
    root = os.path.abspath(os.fspath(path))
    try:
        if number is None:
            manifest = destination.newest_manifest()
            if manifest is None:
                raise CheckpointError(f"{destination.describe()} holds no complete checkpoint pass (no manifest)")
        else:
            manifest = Manifest.from_json(destination.read(manifest_name(number)), manifest_name(number))
        failed: Dict[str, str] = {}
        for rel, entry in sorted(manifest.files.items()):
            parts = rel.split("/")
            if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
                failed[rel] = "the path would leave the folder: refused"
                continue
            target = os.path.join(root, *parts)
            try:
                st = os.lstat(target)
                if st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns:
                    continue
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed[rel] = exc.strerror or str(exc)
                continue
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = os.path.join(os.path.dirname(target), f".tt-part-restore-{os.getpid()}")
                try:
                    destination.fetch(data_name(entry.stored, rel), tmp)
                    got = _md5(tmp)
                    if got != entry.md5:
                        raise CheckpointError(f"its content (MD5 {got}) is not what pass {entry.stored} saved")
                    os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
                    os.replace(tmp, target)
                except BaseException:
                    remove_quietly(tmp)
                    raise
            except (OSError, CheckpointError) as exc:
                failed[rel] = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) or type(
                    exc
                ).__name__
        if failed:
            names = ", ".join(repr(p) for p in sorted(failed)[:10])
            raise CheckpointError(
                f"restore of pass {manifest.number} from {destination.describe()}: {len(failed)} file(s) "
                f"not restored ({names})",
                failed,
            )
        log.info("restored pass %d (%d files) into %s", manifest.number, len(manifest.files), root)
        return manifest
    finally:
        destination.close()


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                return digest.hexdigest()
            digest.update(block)
