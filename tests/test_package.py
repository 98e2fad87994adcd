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
    heavy = {"psutil", "tqdm", "pexpect", "taurus_tools.process.handle", "taurus_tools.slurm.client"}
    assert not heavy & set(loaded), heavy & set(loaded)


def test_cli_module_loads_no_machinery():
    loaded = run("import json, sys, taurus_tools.cli.main; print(json.dumps(sorted(sys.modules)))")
    assert not {"psutil", "tqdm", "taurus_tools.process.handle", "taurus_tools.datamover.backends"} & set(loaded)


def test_names_resolve_to_their_modules():
    got = run(
        "import json, taurus_tools as t; "
        "print(json.dumps({n: getattr(t, n).__module__ for n in ('Datamover', 'waitfor', 'CopyResult', "
        "'CopyConfig', 'SlurmOptions', 'ProgressCallback', 'NoProgress', 'TqdmProgress')}))"
    )
    assert got == {
        "Datamover": "taurus_tools.datamover.datamover",
        "waitfor": "taurus_tools.datamover.wait",
        "CopyResult": "taurus_tools.transfer.parallel_copy",
        "CopyConfig": "taurus_tools.transfer.config",
        "SlurmOptions": "taurus_tools.slurm.options",
        "ProgressCallback": "taurus_tools.callbacks",
        "NoProgress": "taurus_tools.callbacks",
        "TqdmProgress": "taurus_tools.callbacks",
    }


def test_options_and_callbacks_load_no_machinery():
    """The CLI builds its parser from these before it needs any machinery; tqdm comes with a bar."""
    loaded = run(
        "import json, sys, taurus_tools as t; t.SlurmOptions, t.CopyConfig, t.ProgressCallback, t.TqdmProgress; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert not {"psutil", "tqdm", "taurus_tools.process.handle", "taurus_tools.datamover.backends"} & set(loaded)


def test_readme_layout_matches_the_tree():
    """The README's layout table names every module and subpackage, and nothing that is gone."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 1)]
    listed = set(re.findall(r"^\| `(taurus_tools/[^`]*)`", section, re.M))
    package = root / "taurus_tools"
    wanted = {
        f"taurus_tools/{path.relative_to(package).as_posix()}"
        for path in package.rglob("*.py")
        if path.name != "__init__.py" or path.parent == package
    }
    wanted |= {f"taurus_tools/{d.name}/" for d in package.iterdir() if (d / "__init__.py").is_file()}
    assert not sorted(wanted - listed), f"README's layout table lacks {sorted(wanted - listed)}"
    assert not sorted(listed - wanted), f"README's layout table names what is not there: {sorted(listed - wanted)}"


# ----------------------------------------------------------------------------- backends are the seam
#: The modules that define backends; only they may ask which backend is which.
BACKEND_MODULES = ("datamover/backends.py", "workspace/backends.py")
#: Backend names a caller might compare with ("auto" is a request, not a backend).
BACKEND_NAMES = {"site", "slurm", "local"}


def concrete_backends() -> set:
    """The names of every backend class of the backend modules but the two interfaces."""
    from taurus_tools.datamover import backends as _backends
    from taurus_tools.workspace import backends as _ws_backends

    interfaces = (_backends.Backend, _ws_backends.WorkspaceBackend)
    return {
        name
        for module in (_backends, _ws_backends)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, interfaces) and obj not in interfaces
    }


def backend_checks(source: str, concrete: set) -> list:
    """Lines of ``source`` that ask which backend they have.

    That is ``isinstance``/``issubclass`` with a concrete backend class, a comparison
    involving one (``type(b) is SiteBackend``), a comparison of a backend's ``.name``, or a
    comparison of something named like a backend with a backend's name
    (``ws.backend == "site"``).  ``isinstance(x, Backend)`` (the interface: is this a
    backend at all?) is fine.
    """
    import ast

    def names_in(node: ast.AST) -> set:
        return {
            n.id if isinstance(n, ast.Name) else n.attr
            for n in ast.walk(node)
            if isinstance(n, (ast.Name, ast.Attribute))
        }

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 2:
            if node.func.id in ("isinstance", "issubclass") and names_in(node.args[1]) & concrete:
                found.append(node.lineno)
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            about_backend = any("backend" in ast.unparse(o).lower() for o in operands)
            strings = {c.value for o in operands for c in ast.walk(o) if isinstance(c, ast.Constant)}
            by_name = any(
                isinstance(o, ast.Attribute) and o.attr == "name" and "backend" in ast.unparse(o.value).lower()
                for o in operands
            )
            if by_name or (about_backend and strings & BACKEND_NAMES) or any(names_in(o) & concrete for o in operands):
                found.append(node.lineno)
    return sorted(set(found))


@pytest.mark.parametrize(
    "code",
    [
        "if isinstance(dm.backend, SiteBackend): pass",
        "ok = isinstance(b, (LocalBackend, int))",
        "ok = issubclass(type(ws.workspace_backend), LocalWorkspaceBackend)",
        "x = dm.backend.name != 'local'",
        "x = backend.name in ('site', 'slurm')",
        "x = self.workspace.backend == 'site'",
        "x = type(backend) is SlurmBackend",
    ],
)
def test_backend_check_finder_finds(code):
    assert backend_checks(code, concrete_backends()) == [1]


@pytest.mark.parametrize(
    "code",
    [
        "if isinstance(backend, Backend): pass",
        "ok = isinstance(ws_backend, WorkspaceBackend)",
        "report = {'backend': dm.backend.name}",
        "print(f'{ws.backend} ({ws.reason})')",
        "x = mode == 'local'",
        "x = backend.is_cluster()",
    ],
)
def test_backend_check_finder_leaves(code):
    assert backend_checks(code, concrete_backends()) == []


def test_no_module_asks_which_backend_it_has():
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "taurus_tools"
    concrete = concrete_backends()
    assert {"SiteBackend", "SlurmBackend", "LocalBackend", "SiteWorkspaceBackend", "LocalWorkspaceBackend"} <= concrete
    found = {
        name: lines
        for path in sorted(package.rglob("*.py"))
        if (name := path.relative_to(package).as_posix()) not in BACKEND_MODULES
        and (lines := backend_checks(path.read_text(), concrete))
    }
    assert not found, f"ask the backend (a method on it) instead of checking which it is, at {found}"


def test_a_regular_install_ships_every_subpackage():
    """pyproject.toml's package list (what `pip install .` copies) holds every subpackage."""
    import sys
    from pathlib import Path

    import setuptools

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = config.get("packages", {})
    assert isinstance(find, dict) and "find" in find, "list the packages with [tool.setuptools.packages.find]"
    shipped = set(setuptools.find_packages(where=str(root), include=find["find"]["include"]))
    present = {
        ".".join(path.parent.relative_to(root).parts) for path in (root / "taurus_tools").rglob("__init__.py")
    }
    assert present <= shipped, f"not installed: {sorted(present - shipped)}"
