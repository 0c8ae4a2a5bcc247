"""Where things live under an app's API_ROOT on a host (POSIX paths on Linux, Windows paths on
Windows), and the unit names of its processes. The one source of these names: the host helper
gets them from `.sgpfab/host.json`, which `Layout.host_json` writes at every deploy.

    API_ROOT/
      releases/vX.Y.Z/      one release: app files, .venv/, .sgpfab/ (run scripts, hooks)
      releases/.partial-vX  a release being built; never switched to
      releases/current      the active release (symlink; a junction on Windows)
      shared/               the service user's: db/, media/, logs/, config/ (settings, secrets)
      backups/              database backups
      wheelhouse/           wheels pushed by sgpfab
      incoming/vX/          an uploaded bundle's manifest until the release is verified
      .sgpfab/              host.json, hostctl.py, launch/, bin/uv, lock/, journal.json, audit.jsonl
"""

from __future__ import annotations

import json
import ntpath
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .versions import Version

if TYPE_CHECKING:
    from .inventory import Instance

PARTIAL_PREFIX = ".partial-"  # a release being built; never switched to
MARKER = ".sgpfab-release.json"  # a release's completion marker (its metadata)
LAYOUT_FORMAT = 2


@dataclass(frozen=True)
class Layout:
    root: str
    windows: bool = False

    @classmethod
    def for_instance(cls, inst: Instance) -> Layout:
        return cls(inst.api_root, inst.host.os == "windows")

    def _p(self, *parts: str) -> str:
        joined: str = (ntpath if self.windows else posixpath).join(self.root, *parts)
        return joined

    @property
    def releases(self) -> str:
        return self._p("releases")

    @property
    def current(self) -> str:
        return self._p("releases", "current")

    @property
    def shared(self) -> str:
        return self._p("shared")

    @property
    def shared_dirs(self) -> list[str]:
        return [self._p("shared", d) for d in ("db", "media", "logs")]

    @property
    def config_dir(self) -> str:
        """The app's settings (env, overrides.env) and secret files: service user only."""
        return self._p("shared", "config")

    @property
    def env_file(self) -> str:
        return self._p("shared", "config", "env")

    @property
    def overrides_file(self) -> str:
        return self._p("shared", "config", "overrides.env")

    @property
    def secret_files(self) -> str:
        return self._p("shared", "config", "files")

    def database(self, rel: str) -> str:
        return self._p("shared", *rel.split("/"))

    @property
    def logs(self) -> str:
        return self._p("shared", "logs")

    @property
    def backups(self) -> str:
        return self._p("backups")

    @property
    def tools(self) -> str:
        return self._p(".sgpfab")

    @property
    def host_json(self) -> str:
        return self._p(".sgpfab", "host.json")

    @property
    def hostctl(self) -> str:
        return self._p(".sgpfab", "hostctl.py")

    @property
    def launch(self) -> str:
        """sgpfab's launchers (uvicorn server, gunicorn config) shared by every release."""
        return self._p(".sgpfab", "launch")

    @property
    def launch_env(self) -> str:
        """Environment for the launchers only (the health probe token); read by systemd."""
        return self._p(".sgpfab", "launch.env")

    @property
    def uv(self) -> str:
        return self._p(".sgpfab", "bin", "uv.exe" if self.windows else "uv")

    @property
    def wheelhouse(self) -> str:
        return self._p("wheelhouse")

    @property
    def owned_dirs(self) -> list[str]:
        """Directories owned by the deploying user (shared/ and backups/ belong to the service)."""
        return [
            self.root,
            self.releases,
            self.tools,
            self._p(".sgpfab", "bin"),
            self.launch,
            self.wheelhouse,
            self._p("incoming"),
        ]

    def release(self, version: Version | str) -> str:
        name = version.release_name if isinstance(version, Version) else version
        return self._p("releases", name)

    def partial(self, version: Version) -> str:
        return self._p("releases", PARTIAL_PREFIX + version.release_name)

    def incoming(self, version: Version) -> str:
        """Where an uploaded bundle's manifest waits for the release to be verified."""
        return self._p("incoming", version.release_name)

    def in_release(self, release: str, *parts: str) -> str:
        return self._p("releases", release, *parts)

    def host_json_text(self, inst: Instance, login_user: str, service_user: str) -> str:
        """What on-host tools need to know about this app, without a controller (no secrets)."""
        data = {
            "format": LAYOUT_FORMAT,
            "app": inst.app,
            "root": self.root,
            "service": inst.service,
            "port": inst.port,
            "bind": inst.bind,
            "login_user": login_user,
            "service_user": service_user,
            "partial_prefix": PARTIAL_PREFIX,
            "marker": MARKER,
            "release_prefix": "v",
            "database": {
                "engine": inst.database.engine,
                "path": self.database(inst.database.path) if inst.database.engine == "sqlite" else None,
                "env": inst.database.env,
            },
            "backups_keep": inst.backups_keep,
            "python": inst.interpreter,
            "health": inst.health.model_dump(mode="json"),
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"


def systemd_escape(text: str) -> str:
    """systemd-escape (not --path): what an instance name must look like so `%I` gives `text` back."""
    out = []
    for i, ch in enumerate(text):
        if ch == "/":
            out.append("-")
        elif (ch.isascii() and (ch.isalnum() or ch in ":_.")) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


@dataclass(frozen=True)
class Units:
    """Unit names of one app instance: SERVICE-PROCESS@RELEASE.service, SERVICE.socket, SERVICE.target."""

    service: str

    @property
    def socket(self) -> str:
        return f"{self.service}.socket"

    @property
    def target(self) -> str:
        return f"{self.service}.target"

    def template(self, process: str) -> str:
        return f"{self.service}-{process}@.service"

    def instance(self, process: str, release: str) -> str:
        return f"{self.service}-{process}@{systemd_escape(release)}.service"

    def windows_service(self, process: str) -> str:
        """NSSM service name of a process (the web process keeps the plain service name)."""
        return self.service if process == "web" else f"{self.service}-{process}"
