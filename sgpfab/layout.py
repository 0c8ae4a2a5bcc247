"""Where things live under API_ROOT on a host (POSIX paths on Linux, Windows paths on Windows)."""

from __future__ import annotations

import ntpath
import posixpath
from dataclasses import dataclass

from .versions import Version

PARTIAL_PREFIX = ".partial-"  # a release being built; never switched to


@dataclass(frozen=True)
class Layout:
    root: str
    windows: bool = False

    @classmethod
    def for_host(cls, host) -> "Layout":
        return cls(host.api_root, host.os == "windows")

    def _p(self, *parts: str) -> str:
        return (ntpath if self.windows else posixpath).join(self.root, *parts)

    @property
    def releases(self) -> str:
        return self._p("releases")

    @property
    def current(self) -> str:
        return self._p("releases", "current")

    @property
    def owned_dirs(self) -> list[str]:
        """Directories owned by the deploying user (shared/ and backups/ belong to the service)."""
        return [self.root, self.releases, self.tools, self._p(".sgpfab", "bin"), self.wheelhouse,
                self._p("incoming")]

    @property
    def shared(self) -> str:
        return self._p("shared")

    @property
    def shared_dirs(self) -> list[str]:
        return [self._p("shared", d) for d in ("db", "media", "logs")]

    @property
    def database(self) -> str:
        return self._p("shared", "db", "app.db")

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
    def hostctl(self) -> str:
        return self._p(".sgpfab", "hostctl.py")

    @property
    def serve(self) -> str:
        """The app launcher (uvicorn with a draining shutdown) on Linux hosts."""
        return self._p(".sgpfab", "serve.py")

    @property
    def uv(self) -> str:
        return self._p(".sgpfab", "bin", "uv.exe" if self.windows else "uv")

    @property
    def wheelhouse(self) -> str:
        return self._p("wheelhouse")

    def release(self, version: Version | str) -> str:
        name = version.release_name if isinstance(version, Version) else version
        return self._p("releases", name)

    def partial(self, version: Version) -> str:
        return self._p("releases", PARTIAL_PREFIX + version.release_name)

    def incoming(self, version: Version) -> str:
        """Where an uploaded bundle waits to be verified and unpacked."""
        return self._p("incoming", version.release_name)
