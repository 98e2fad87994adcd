#!/usr/bin/env python3
"""The two data sets of the S3 benchmark (issue 15), built reproducibly (run by hand, not in CI).

* ``small``: 20,000 small files with heavy-tailed sizes in nested folders (1 to 4 levels,
  fan-out 6, about 1,500 folders): lognormal sizes with median 16 KiB and sigma 1.5, capped
  at 8 MiB, about 1 % empty; about 950 MiB in all, the largest about 5 MiB.
* ``big``: 8 files of 64 MiB in ``big/``.

Both are written by ``bench/copy_tree.py``'s generator (seeded: every run writes the same
names and bytes; the contents differ from file to file) with a manifest,
``tt-bench-manifest.json``, at the top: a folder whose manifest has the same parameters is
reused as it is.  The manifest is part of the tree (it is copied like any file).

    python bench/s3_data.py /dev/shm/tt-s3-data            # both: /dev/shm/tt-s3-data/{small,big}
    python bench/s3_data.py /tmp/tt-s3-data --only small
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import copy_tree  # noqa: E402  (bench/copy_tree.py: the seeded tree generator)

#: The seed of both data sets.
SEED = 15

#: Parameters of ``copy_tree.make_tree`` for each data set, by name.
DATA_SETS: Dict[str, Dict[str, object]] = {
    "small": {"files": 20000, "median_kib": 16.0, "sigma": 1.5, "cap_mib": 8.0, "big": 0, "big_mib": 64.0,
              "seed": SEED},
    "big": {"files": 0, "median_kib": 16.0, "sigma": 1.5, "cap_mib": 8.0, "big": 8, "big_mib": 64.0,
            "seed": SEED},
}


def build(name: str, folder: str, *, quiet: bool = True) -> Dict[str, int]:
    """Write data set ``name`` ("small" or "big") into ``folder`` (kept if already there); its totals.

    The totals: ``files`` (the manifest not counted), ``bytes``, ``dirs``, ``largest_small``
    and ``median_small``.
    """
    if name not in DATA_SETS:
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATA_SETS)}")
    return copy_tree.make_tree(folder, dict(DATA_SETS[name]), quiet)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", help="folder to hold one sub-folder per data set (e.g. /dev/shm/tt-s3-data)")
    p.add_argument("--only", choices=list(DATA_SETS), help="build only this data set")
    args = p.parse_args(argv)
    for name in [args.only] if args.only else list(DATA_SETS):
        totals = build(name, os.path.join(args.base, name), quiet=False)
        print(f"{name}: {totals['files']} files, {totals['bytes'] / 2**20:.1f} MiB, {totals['dirs']} folders, "
              f"median {totals['median_small']} B, largest small {totals['largest_small']} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
