"""The Lambda code package and the stack template, as ``durable synth`` writes them.

The bundle is one zip used by every function of the stack::

    durable/                  this package (the handlers live in durable.runtime.aws)
    <your modules>            the workflow files, their packages and the local files they import
    durable_registry.json     {"modules": [...], "workflows": {...}, "python", "architecture"}:
                              what the orchestrator imports, and what the wheels are built for
    pydantic_core/ ...        runtime dependencies, as manylinux wheels for the Lambda's
                              Python and architecture (pip --platform --only-binary=:all:)

boto3, botocore and their own dependencies are left out: every Lambda Python
runtime provides them. The zip is deterministic (sorted entries, fixed
timestamps, no bytecode), so an unchanged project gives the same bytes and the
same S3 key, and a second deploy finds nothing to change.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from types import ModuleType

from durable.errors import ConfigurationError
from durable.loader import load_modules, module_workflows

__all__ = [
    "ARCHITECTURES",
    "PYTHON_VERSIONS",
    "REGISTRY_FILE",
    "Bundle",
    "BundleError",
    "build_bundle",
    "open_bundle",
    "state_machine_text",
    "template_text",
]

REGISTRY_FILE = "durable_registry.json"
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
"""Lambda architecture -> the machine name in manylinux wheel tags."""
PYTHON_VERSIONS = ("3.11", "3.12")

# What the handlers import besides the standard library (typer and rich serve only the CLI).
_RUNTIME_REQUIREMENTS = ("pydantic", "cloudpickle", "aws-lambda-powertools", "aws-xray-sdk")
# Provided by every Lambda Python runtime; removed after pip installed them as dependencies.
_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
_PROVIDED_DISTS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python_dateutil",
    "urllib3",
    "six",
)
_SKIPPED_PARTS = {"__pycache__"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleError(ConfigurationError):
    """The bundle cannot be built (no workflows, pip failed, bad option)."""


@dataclass(frozen=True)
class Bundle:
    """A built code package."""

    path: Path
    modules: tuple[str, ...]
    """The dotted module names the orchestrator imports (the registry)."""
    workflows: dict[str, str]
    """Workflow name -> defining module."""
    size: int
    entries: int
    sha256: str
    python: str = "3.11"
    """The Lambda runtime's Python version the compiled wheels are for."""
    arch: str = "x86_64"
    """The Lambda architecture the compiled wheels are for."""


def template_text() -> str:
    """The stack's CloudFormation template, as shipped inside the package."""
    return (files("durable") / "_infra" / "template.yaml").read_text(encoding="utf-8")


def state_machine_text() -> str:
    """The loop's state machine (ASL), as shipped inside the package."""
    return (files("durable") / "_infra" / "statemachine.asl.json").read_text(encoding="utf-8")


def build_bundle(
    targets: Sequence[str | Path],
    out: Path,
    *,
    python: str = "3.11",
    arch: str = "x86_64",
    index_url: str | None = None,
) -> Bundle:
    """Import ``targets`` (workflow files or module names) and write their bundle to ``out``.

    Raises:
        LoadError: a target cannot be imported.
        BundleError: no target defines a workflow, a bad option, or pip failed.
    """
    if python not in PYTHON_VERSIONS:
        raise BundleError(f"--python must be one of {', '.join(PYTHON_VERSIONS)}, not {python!r}")
    if arch not in ARCHITECTURES:
        raise BundleError(f"--arch must be one of {', '.join(ARCHITECTURES)}, not {arch!r}")
    if not targets:
        raise BundleError(
            "no workflow modules: pass --module FILE.py or list them in "
            "[tool.durable] modules of pyproject.toml"
        )
    modules = load_modules(list(targets))
    workflows: dict[str, str] = {}
    for module in modules:
        for wf in module_workflows(module).values():
            workflows.setdefault(wf.name, module.__name__)
    if not workflows:
        shown = ", ".join(str(t) for t in targets)
        raise BundleError(f"{shown} define no @workflow: nothing to deploy")
    sources = _user_sources(modules)
    registry = {
        "modules": [m.__name__ for m in modules],
        "workflows": workflows,
        "python": python,
        "architecture": arch,
    }
    with tempfile.TemporaryDirectory(prefix="durable-bundle-") as tmp:
        site = Path(tmp)
        _pip_install(site, python=python, arch=arch, index_url=index_url)
        entries: dict[str, Path | bytes] = dict(_tree(site))
        package = Path(__file__).resolve().parent.parent
        for arcname, path in _tree(package):
            entries[f"durable/{arcname}"] = path
        entries.update(sources)
        entries[REGISTRY_FILE] = (json.dumps(registry, indent=2, sort_keys=True) + "\n").encode()
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_zip(out, entries)
    data = out.read_bytes()
    return Bundle(
        path=out,
        modules=tuple(m.__name__ for m in modules),
        workflows=workflows,
        size=len(data),
        entries=len(entries),
        sha256=hashlib.sha256(data).hexdigest(),
        python=python,
        arch=arch,
    )


def open_bundle(path: Path) -> Bundle:
    """A bundle written before (``durable synth``), read back from its zip and registry.

    Raises:
        BundleError: the file is missing or is not a bundle.
    """
    try:
        data = path.read_bytes()
        with zipfile.ZipFile(path) as archive:
            registry = json.loads(archive.read(REGISTRY_FILE))
            entries = len(archive.namelist())
    except FileNotFoundError:
        raise BundleError(f"bundle {path} does not exist") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path} is not a bundle written by `durable synth`: {exc}") from None
    return Bundle(
        path=path,
        modules=tuple(registry.get("modules", [])),
        workflows=dict(registry.get("workflows", {})),
        size=len(data),
        entries=entries,
        sha256=hashlib.sha256(data).hexdigest(),
        python=str(registry.get("python", "3.11")),
        arch=str(registry.get("architecture", "x86_64")),
    )


# ----------------------------------------------------------------------------- user code


def _user_sources(modules: Iterable[ModuleType]) -> dict[str, Path]:
    """Archive name -> file for the workflow modules, their packages and local imports."""
    found: dict[str, Path] = {}
    pending: list[tuple[str, Path, list[Path]]] = []
    for module in modules:
        file = getattr(module, "__file__", None)
        if file is None:
            raise BundleError(f"module {module.__name__!r} has no source file to bundle")
        path = Path(file).resolve()
        roots = [_import_root(module.__name__, path), path.parent]
        pending.append((module.__name__, path, roots))
    while pending:
        name, path, roots = pending.pop()
        arcname = _arcname(name, path)
        if arcname in found:
            continue
        if name == "durable" or name.startswith("durable."):
            continue  # bundled whole, from the installed package
        found[arcname] = path
        parent = name.rpartition(".")[0]
        candidates = [parent] if parent else []
        candidates += _imported_names(name, path)
        for candidate in candidates:
            located = _locate(candidate, roots)
            if located is not None:
                pending.append((candidate, located, roots))
    return found


def _import_root(name: str, path: Path) -> Path:
    """The ``sys.path`` entry a module named ``name`` at ``path`` was imported from."""
    depth = name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[depth]


def _arcname(name: str, path: Path) -> str:
    base = name.replace(".", "/")
    return f"{base}/__init__.py" if path.name == "__init__.py" else f"{base}.py"


def _imported_names(name: str, path: Path) -> list[str]:
    """Every module name ``path`` may import (``from a import b`` gives ``a`` and ``a.b``)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError):
        return []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                keep = len(parts) - (node.level - 1)
                if keep < 0:
                    continue
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base:
                names.append(base)
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
    return names


def _locate(name: str, roots: Sequence[Path]) -> Path | None:
    """The local source file of module ``name`` under one of ``roots`` (not an installed one)."""
    if not name or name.split(".")[0] in sys.stdlib_module_names:
        return None
    relative = Path(*name.split("."))
    for root in roots:
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file() and not _installed(candidate):
                return candidate.resolve()
    return None


def _installed(path: Path) -> bool:
    return any(part in {"site-packages", "dist-packages"} for part in path.parts)


# ----------------------------------------------------------------------------- dependencies


def _requirements() -> list[str]:
    """The handlers' dependencies, pinned to the versions installed here when known."""
    pinned: list[str] = []
    for name in _RUNTIME_REQUIREMENTS:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def _platforms(python: str, arch: str) -> list[str]:
    machine = ARCHITECTURES[arch]
    # python3.11 runs on Amazon Linux 2 (glibc 2.26); python3.12 on Amazon Linux 2023 (2.34).
    tags = [f"manylinux2014_{machine}"]
    if python != "3.11":
        tags.insert(0, f"manylinux_2_28_{machine}")
    return tags


def _pip_install(target: Path, *, python: str, arch: str, index_url: str | None) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--only-binary=:all:",
    ]
    for tag in _platforms(python, arch):
        command += ["--platform", tag]
    if index_url:
        command += ["--index-url", index_url]
    command += _requirements()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if line.startswith("ERROR")), lines[-1] if lines else ""
        )
        raise BundleError(
            f"pip could not install the Lambda dependencies for Python {python} {arch}: "
            f"{detail.removeprefix('ERROR: ') or f'exit status {result.returncode}'}"
        )
    for name in _PROVIDED:
        shutil.rmtree(target / name, ignore_errors=True)
        (target / f"{name}.py").unlink(missing_ok=True)
    for info in target.glob("*.dist-info"):
        if info.name.split("-")[0].lower() in _PROVIDED_DISTS:
            shutil.rmtree(info)
    shutil.rmtree(target / "bin", ignore_errors=True)


# ----------------------------------------------------------------------------- zip


def _tree(root: Path) -> Iterable[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or _SKIPPED_PARTS.intersection(relative.parts) or path.suffix == ".pyc":
            continue
        yield relative.as_posix(), path


def _write_zip(out: Path, entries: dict[str, Path | bytes]) -> None:
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname in sorted(entries):
            source = entries[arcname]
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            data = source if isinstance(source, bytes) else source.read_bytes()
            archive.writestr(info, data)
    partial.replace(out)
