"""The app's dependencies, as its project declares them, turned into wheels for its targets.

Sources (the app's `dependencies.source`; `auto` picks the first that exists):
- `uv`: pyproject.toml + uv.lock (exported with `uv export --locked`); the project itself is
  built as a wheel and installed too when it is a package;
- `requirements`: a requirements file (`dependencies.file`, default requirements.txt).

For each target (arch, glibc, CPython version) the requirements are resolved to exact versions
for that platform (`uv pip compile --python-platform`), then wheels are downloaded for every
manylinux tag that target's glibc supports (PEP 600). A dependency published only as an sdist is
built into a wheel on the controller: a pure-Python one always works; a compiled one only when
the controller itself matches the target, otherwise the build stops naming the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .. import cache
from ..appspec import SERVER_PINS, AppSpec, Target
from ..errors import InputError, SgpfabError

# Glibc versions uv can resolve for (`--python-platform ARCH-manylinux_2_X`).
UV_GLIBC = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
LEGACY = {"x86_64": {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}, "aarch64": {17: "manylinux2014"}}


@dataclass
class Dependencies:
    source: str  # uv | requirements
    requirements: dict[str, str] = field(default_factory=dict)  # target key -> pinned requirements text
    wheels: list[Path] = field(default_factory=list)
    project_wheel: Path | None = None
    added: tuple[str, ...] = ()
    requires_python: str | None = None


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT", "CONDA_"))}


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 1800) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SgpfabError(f"{what}: {e}") from None
    if r.returncode:
        raise SgpfabError(f"{what} failed: {_cause(r.stderr or r.stdout)}")
    return r.stdout


def _cause(text: str) -> str:
    """The first error line and the tool's own last line (its summary), on one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("WARNING: Location")]
    if not lines:
        return "(no output)"
    first = next(
        (ln for ln in lines if re.search(r"error|fail|no matching|not found|unsatisf|conflict", ln, re.I)), lines[0]
    )
    last = lines[-1]
    return first if first == last else f"{first} ... {last}"


def detect_source(src: Path, spec: AppSpec) -> str:
    want = spec.dependencies.source
    has_uv = (src / "pyproject.toml").is_file() and (src / "uv.lock").is_file()
    has_req = (src / spec.dependencies.file).is_file()
    if want == "uv" and not has_uv:
        raise InputError(f"{src}: dependencies.source is uv but there is no pyproject.toml + uv.lock")
    if want == "requirements" and not has_req:
        raise InputError(f"{src}: no {spec.dependencies.file} (dependencies.file)")
    if want != "auto":
        return want
    if has_uv:
        return "uv"
    if has_req:
        return "requirements"
    raise InputError(
        f"{src}: no dependencies found: sgpfab reads pyproject.toml + uv.lock (a uv project) or a"
        f" requirements file ({spec.dependencies.file}; set dependencies.file for another name)"
    )


def pyproject(src: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((src / "pyproject.toml").read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise InputError(f"{src}/pyproject.toml is not valid TOML: {e}") from None


def is_package(data: dict[str, Any], spec: AppSpec) -> bool:
    """Whether the app is an installable project (installed into its venv so `import app` works
    in migrations and workers)."""
    choice = spec.dependencies.install_project
    if choice != "auto":
        return choice == "yes"
    uv_package = data.get("tool", {}).get("uv", {}).get("package")
    if uv_package is not None:
        return bool(uv_package)
    return "build-system" in data and "project" in data


def platform_tags(t: Target) -> list[str]:
    """Every platform tag a host of the target accepts: manylinux tags down from its glibc
    (newest first, PEP 600) on Linux, win_amd64 / win_arm64 on Windows."""
    if t.os == "windows":
        return ["win_amd64" if t.arch == "x86_64" else "win_arm64"]
    major, minor = (int(x) for x in t.glibc.split("."))
    tags = []
    for m in range(minor, 4, -1):
        tags.append(f"manylinux_{major}_{m}_{t.arch}")
        if m in LEGACY.get(t.arch, {}):
            tags.append(f"{LEGACY[t.arch][m]}_{t.arch}")
    return tags


def supported_tags(t: Target) -> set[Tag]:
    py = tuple(int(x) for x in t.python.split("."))
    plats = platform_tags(t) + ([f"linux_{t.arch}"] if t.os == "linux" else [])
    interp = f"cp{py[0]}{py[1]}"
    return set(cpython_tags(py, abis=[interp, "abi3", "none"], platforms=plats)) | set(
        compatible_tags(py, interpreter=interp, platforms=plats)
    )


def uv_platform(t: Target) -> str:
    if t.os == "windows":
        return f"{'x86_64' if t.arch == 'x86_64' else 'aarch64'}-pc-windows-msvc"
    minor = int(t.glibc.split(".")[1])
    best = max((m for m in UV_GLIBC if m <= minor), default=17)
    return f"{t.arch}-manylinux_2_{best}"


def base_requirements(src: Path, spec: AppSpec, source: str) -> str:
    if source == "requirements":
        return (src / spec.dependencies.file).read_text()
    cmd = [
        uv_bin(),
        "export",
        "--locked",
        "--no-hashes",
        "--no-emit-workspace",
        "--no-dev",
        "--no-annotate",
        "--no-header",
        "--format",
        "requirements-txt",
        "--project",
        str(src),
    ]
    for extra in spec.dependencies.extras:
        cmd += ["--extra", extra]
    return _run(cmd, f"reading {src}/uv.lock (uv export --locked)", cwd=src)


def names(requirements: str) -> set[str]:
    out: set[str] = set()
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            out.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    return out


def compile_for(src: Path, text: str, t: Target) -> str:
    """Exact versions for one target, markers evaluated for it (cached when fully pinned)."""
    pinned = all("==" in ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("#", "-")))
    key = hashlib.sha256(json.dumps([text, t.key, uv_platform(t)]).encode()).hexdigest()[:24]
    if pinned:
        hit = cache.root() / "resolved" / f"{key}.txt"
        if hit.is_file():
            return hit.read_text()
    with tempfile.TemporaryDirectory(prefix="sgpfab-req-") as d:
        inp = Path(d) / "requirements.in"
        inp.write_text(text)
        base = [
            uv_bin(),
            "pip",
            "compile",
            str(inp),
            "--python-version",
            t.python,
            "--python-platform",
            uv_platform(t),
            "--no-header",
            "--no-annotate",
            "--quiet",
        ]
        try:
            out = _run(base + ["--offline"], "resolving offline", cwd=src)
        except SgpfabError:
            out = _run(base, f"resolving the dependencies for {t.key} (uv pip compile)", cwd=src)
    if pinned:
        (cache.root() / "resolved").mkdir(parents=True, exist_ok=True)
        tmp = cache.root() / "resolved" / f".{key}.{os.getpid()}"
        tmp.write_text(out)
        os.replace(tmp, cache.root() / "resolved" / f"{key}.txt")
    return out


def prepare(src: Path, spec: AppSpec, say: Callable[[str], object] = print) -> Dependencies:
    """Resolve, download and build every wheel the app needs on each of its targets."""
    source = detect_source(src, spec)
    data = pyproject(src)
    deps = Dependencies(source, requires_python=(data.get("project") or {}).get("requires-python"))
    if deps.requires_python:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            req_py = SpecifierSet(deps.requires_python)
        except InvalidSpecifier:
            raise InputError(f"{src}/pyproject.toml: invalid requires-python {deps.requires_python!r}") from None
        for t in spec.targets:
            if not req_py.contains(t.python + ".0", prereleases=True) and not req_py.contains(t.python + ".99"):
                raise InputError(
                    f"the app requires Python {deps.requires_python}, but target {t.key} has Python"
                    f" {t.python}: change targets: in the inventory"
                )
    base = base_requirements(src, spec, source)
    if is_package(data, spec):
        deps.project_wheel = build_project_wheel(src, say)
    have = names(base)
    added = [SERVER_PINS[n] for n in spec.servers_needed() if canonicalize_name(n) not in have]
    deps.added = tuple(added)
    text = base + ("\n" + "\n".join(added) + "\n" if added else "")
    for t in spec.targets:
        deps.requirements[t.key] = compile_for(src, text, t)
    deps.wheels = wheelhouse(deps.requirements, spec.targets, say)
    return deps


def build_project_wheel(src: Path, say: Callable[[str], object]) -> Path:
    out = Path(tempfile.mkdtemp(prefix="sgpfab-project-"))
    say(f"building the app's own wheel ({src.name})")
    _run(
        [uv_bin(), "build", "--wheel", "--out-dir", str(out), str(src)],
        f"building {src} as a wheel (uv build)",
        cwd=src,
    )
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise SgpfabError(f"uv build produced {len(wheels)} wheels for {src}, expected one")
    return wheels[0]


def wheelhouse(
    requirements: dict[str, str], targets: tuple[Target, ...], say: Callable[[str], object] = print
) -> list[Path]:
    """Wheels covering every target (cached by the exact requirements and targets)."""
    key = hashlib.sha256(json.dumps([requirements, [t.key for t in targets]], sort_keys=True).encode()).hexdigest()[:24]

    def build(tmp: Path) -> None:
        for t in targets:
            say(f"downloading wheels for {t.key}...")
            req = tmp / f".req-{t.key}.txt"
            req.write_text(requirements[t.key])
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--prefer-binary",
                "--dest",
                str(tmp),
                "--python-version",
                t.python,
                "--implementation",
                "cp",
                "--abi",
                f"cp{t.python.replace('.', '')}",
                "--abi",
                "abi3",
                "--abi",
                "none",
                "-r",
                str(req),
            ]
            for tag in platform_tags(t):
                cmd += ["--platform", tag]
            _run(cmd, f"downloading the wheels for {t.key} (pip download)", timeout=3600)
            req.unlink()
        for sdist in sorted([*tmp.glob("*.tar.gz"), *tmp.glob("*.zip")]):
            _build_sdist(sdist, tmp, targets, say)
        for t in targets:
            _check_covered(requirements[t.key], tmp, t)

    d = cache.entry("wheelhouse", key, build)
    return sorted(d.glob("*.whl"))


def _build_sdist(sdist: Path, out: Path, targets: tuple[Target, ...], say: Callable[[str], object]) -> None:
    say(f"no wheel on the index for {sdist.name}: building one")
    with tempfile.TemporaryDirectory(prefix="sgpfab-sdist-") as d:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--wheel-dir",
                d,
                str(sdist),
            ],
            f"building a wheel from {sdist.name}",
            timeout=3600,
        )
        built = sorted(Path(d).glob("*.whl"))
        if len(built) != 1:
            raise SgpfabError(f"building {sdist.name} gave {len(built)} wheels")
        wheel = built[0]
        _, _, _, tags = parse_wheel_filename(wheel.name)
        pure = all(t.platform == "any" for t in tags)
        if not pure and not all(_controller_matches(t) for t in targets):
            name = sdist.name.rsplit("-", 1)[0]
            raise SgpfabError(
                f"{name} has no wheel for the targets and builds a compiled extension ({wheel.name}):"
                " build the bundle on a machine matching the targets (same arch, CPython and an"
                " equal or older glibc) or pin a version that publishes manylinux wheels"
            )
        shutil.move(str(wheel), out / wheel.name)
    sdist.unlink()


def _controller_matches(t: Target) -> bool:
    glibc = platform.libc_ver()[1] or "0"
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if t.os != ("windows" if sys.platform == "win32" else "linux"):
        return False
    return (
        platform.machine() == t.arch
        and here == t.python
        and tuple(int(x) for x in glibc.split(".")[:2]) <= tuple(int(x) for x in t.glibc.split("."))
    )


def _check_covered(requirements: str, wheel_dir: Path, t: Target) -> None:
    """Every pinned requirement has a wheel that installs on the target."""
    ok = supported_tags(t)
    have: dict[str, list[frozenset[Tag]]] = {}
    for w in wheel_dir.glob("*.whl"):
        try:
            name, version, _, tags = parse_wheel_filename(w.name)
        except InvalidWheelFilename:
            continue
        have.setdefault(f"{name}=={version}", []).append(tags)
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if not pins:
            continue
        from packaging.version import Version as PV

        key = f"{canonicalize_name(req.name)}=={PV(pins[0])}"
        if not any(tags & ok for tags in have.get(key, [])):
            raise SgpfabError(
                f"no wheel of {req.name}=={pins[0]} installs on target {t.key}"
                f" (arch {t.arch}, glibc {t.glibc}, CPython {t.python})"
            )
