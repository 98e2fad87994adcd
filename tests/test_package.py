"""The package's public surface: every public name importable, and importing it stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import taurus_tools

PUBLIC = sorted(taurus_tools.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_is_importable(name):
    assert getattr(taurus_tools, name) is not None
    assert name in dir(taurus_tools)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Datamoover'"):
        taurus_tools.Datamoover  # noqa: B018


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def test_import_loads_no_machinery():
    loaded = run("import json, sys, taurus_tools; print(json.dumps(sorted(sys.modules)))")
    heavy = {"psutil", "tqdm", "pexpect", "taurus_tools._process", "taurus_tools._slurm"}
    assert not heavy & set(loaded), heavy & set(loaded)


def test_cli_module_loads_no_machinery():
    loaded = run("import json, sys, taurus_tools._cli; print(json.dumps(sorted(sys.modules)))")
    assert not {"psutil", "tqdm", "taurus_tools._process", "taurus_tools._backends"} & set(loaded)


def test_names_resolve_to_their_modules():
    got = run(
        "import json, taurus_tools as t; "
        "print(json.dumps({n: getattr(t, n).__module__ for n in ('Datamover', 'waitfor', 'CopyResult', "
        "'CopyConfig', 'SlurmOptions', 'ProgressCallback', 'NoProgress', 'TqdmProgress')}))"
    )
    assert got == {
        "Datamover": "taurus_tools._datamover",
        "waitfor": "taurus_tools._wait",
        "CopyResult": "taurus_tools._parallel_copy",
        "CopyConfig": "taurus_tools._copy_config",
        "SlurmOptions": "taurus_tools._slurm_options",
        "ProgressCallback": "taurus_tools._callbacks",
        "NoProgress": "taurus_tools._callbacks",
        "TqdmProgress": "taurus_tools._callbacks",
    }


def test_options_and_callbacks_load_no_machinery():
    """The CLI builds its parser from these before it needs any machinery; tqdm comes with a bar."""
    loaded = run(
        "import json, sys, taurus_tools as t; t.SlurmOptions, t.CopyConfig, t.ProgressCallback, t.TqdmProgress; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert not {"psutil", "tqdm", "taurus_tools._process", "taurus_tools._backends"} & set(loaded)


def test_readme_layout_lists_every_module():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    missing = [p.name for p in sorted((root / "taurus_tools").glob("*.py")) if f"`taurus_tools/{p.name}`" not in readme]
    assert not missing, f"README's layout table lacks {missing}"
