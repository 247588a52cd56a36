"""Importing user workflow files for the CLI: ``FILE.py:WORKFLOW`` specs and module lists.

A file is imported under one stable module name, so that loading it twice
(two specs naming the same file, ``--module`` and a spec, a test importing it
too) gives the same module and registers its workflows once:

* a file in a plain folder is imported by its stem, with the folder on
  ``sys.path`` (``flows/orders.py`` -> module ``orders``);
* a file inside a package (folders with ``__init__.py``) is imported by its
  dotted name, with the folder above the top package on ``sys.path``
  (``examples/remind_user.py`` -> module ``examples.remind_user``), so its
  relative imports work and ``import examples.remind_user`` elsewhere is the
  same module. Its own folder goes at the end of ``sys.path`` too, so that
  plain imports of its sibling files work as they do for a script.

Every failure (missing file, syntax error, exception during import, unknown
workflow name) is a :class:`LoadError` with a one-line message.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from durable.errors import ConfigurationError
from durable.workflow import Workflow

__all__ = [
    "LoadError",
    "configured_modules",
    "load_module",
    "load_modules",
    "load_workflow",
    "module_workflows",
    "parse_spec",
]


class LoadError(ConfigurationError):
    """A workflow file or module could not be loaded, or lacks the named workflow."""


def parse_spec(spec: str) -> tuple[Path, str | None]:
    """Split ``"path/to/file.py:workflow"`` into the path and the workflow name.

    The name is ``None`` for a bare ``"file.py"``.

    Raises:
        LoadError: the spec does not name a ``.py`` file.
    """
    file, sep, name = spec.rpartition(":")
    if not sep:
        file, name = spec, ""
    if not file.endswith(".py"):
        raise LoadError(f"expected FILE.py:WORKFLOW, got {spec!r}")
    if sep and not name:
        raise LoadError(f"no workflow name after ':' in {spec!r} (expected FILE.py:WORKFLOW)")
    return Path(file), name or None


def load_workflow(spec: str) -> Workflow[Any, Any]:
    """Import the file of ``spec`` (``FILE.py:WORKFLOW``) and return the workflow it names.

    ``WORKFLOW`` is the name of a module attribute or the registered name of a
    workflow defined in the file. A bare ``FILE.py`` is accepted when the file
    defines exactly one workflow.

    Raises:
        LoadError: missing file, import failure, or no such workflow in the file.
    """
    path, name = parse_spec(spec)
    module = load_module(path)
    found = module_workflows(module)
    if name is None:
        if len(found) == 1:
            return next(iter(found.values()))
        raise LoadError(
            f"{path} defines {_describe(found)}; name one with {path}:WORKFLOW"
            if found
            else f"{path} defines no @workflow"
        )
    attr = getattr(module, name, None)
    if isinstance(attr, Workflow):
        return attr
    for wf in found.values():
        if wf.name == name:
            return wf
    if not found:
        raise LoadError(f"{path} has no workflow {name!r}: it defines no @workflow")
    raise LoadError(f"{path} has no workflow {name!r}; it defines {_describe(found)}")


def module_workflows(module: ModuleType) -> dict[str, Workflow[Any, Any]]:
    """The workflows a module defines, by attribute name (imported ones excluded)."""
    found: dict[str, Workflow[Any, Any]] = {}
    for attr, value in vars(module).items():
        if (
            isinstance(value, Workflow)
            and value.fn.__module__ == module.__name__
            and all(value is not seen for seen in found.values())
        ):
            found[attr] = value
    return found


def load_module(target: str | Path) -> ModuleType:
    """Import a workflow file (``something.py``) or an importable module name.

    Raises:
        LoadError: missing file, syntax error, or any exception raised by the import.
    """
    text = str(target)
    if not text.endswith(".py"):
        return _import(text, None, text)
    path = Path(text)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise LoadError(f"workflow file {text} {what}")
    path = path.resolve()
    root, module_name = _module_name(path)
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        _check_same_file(loaded, path, module_name, text)
        return loaded
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # plain imports of sibling files, as for a script
    module = _import(module_name, path, text)
    _check_same_file(module, path, module_name, text)
    return module


def load_modules(targets: Sequence[str | Path]) -> list[ModuleType]:
    """Import several files or module names (see :func:`load_module`), in order."""
    return [load_module(t) for t in targets]


def configured_modules(folder: Path | None = None) -> list[str]:
    """The ``[tool.durable] modules`` list of ``pyproject.toml`` in ``folder`` (default: cwd).

    Relative file paths are taken relative to that folder. An absent file,
    table or key gives an empty list.

    Raises:
        LoadError: the file is not valid TOML or ``modules`` is not a list of strings.
    """
    base = folder if folder is not None else Path.cwd()
    pyproject = base / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LoadError(f"{pyproject} is not valid TOML: {exc}") from None
    section = data.get("tool", {}).get("durable", {})
    modules = section.get("modules", []) if isinstance(section, dict) else []
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise LoadError(f"[tool.durable] modules in {pyproject} must be a list of strings")
    return [
        str(base / m) if m.endswith(".py") and not Path(m).is_absolute() else m for m in modules
    ]


# ----------------------------------------------------------------------------- internals


def _module_name(path: Path) -> tuple[Path, str]:
    """The sys.path entry and dotted module name a file is imported under."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    if not all(part.isidentifier() for part in parts):
        # Not importable by a dotted name (e.g. "my-flows/x.py"): fall back to the stem.
        return path.parent, path.stem
    return folder, ".".join(parts)


def _import(module_name: str, path: Path | None, shown: str) -> ModuleType:
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except SyntaxError as exc:
        where = f"{exc.filename or shown}, line {exc.lineno}" if exc.lineno else shown
        raise LoadError(f"syntax error in {where}: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        if path is None and exc.name == module_name:
            raise LoadError(f"no module named {module_name!r}") from None
        raise LoadError(f"cannot import {shown}: {exc}") from None
    except LoadError:
        raise
    except ConfigurationError as exc:
        raise LoadError(f"cannot import {shown}: {exc}") from None
    except Exception as exc:
        raise LoadError(f"cannot import {shown}: {type(exc).__name__}: {exc}") from None


def _check_same_file(module: ModuleType, path: Path, module_name: str, shown: str) -> None:
    file = getattr(module, "__file__", None)
    if file is None or Path(file).resolve() != path:
        other = file or "a built-in module"
        raise LoadError(
            f"cannot import {shown} as module {module_name!r}: that name is already "
            f"taken by {other}; rename the file"
        )


def _describe(found: dict[str, Workflow[Any, Any]]) -> str:
    names = [
        attr if wf.name == attr else f"{attr} (registered as {wf.name!r})"
        for attr, wf in sorted(found.items())
    ]
    return "workflows: " + ", ".join(names)
