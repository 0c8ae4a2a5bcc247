"""The host inventory: hosts/*.yaml -> typed Host objects, and -H name resolution."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError, InventoryError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
POSIX_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
WINDOWS_PATH_RE = re.compile(r"^[A-Za-z]:\\[A-Za-z0-9._\\ -]*$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$|^[A-Za-z0-9.-]{1,15}\\[A-Za-z0-9_.-]{1,20}$")


class HostSettings(BaseModel):
    """Settings a host may set itself or inherit from `defaults`."""

    model_config = ConfigDict(extra="forbid")

    os: Literal["linux", "windows"] = "linux"
    hostname: str | None = None  # address to connect to; default: the name (an ssh_config alias)
    ssh_port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None  # login user; default: ssh_config's User
    run_as: str | None = None  # the service's user; default: the login user
    api_root: str = "/srv/sgp-api"
    service: str = "sgp-api"
    port: int = Field(default=8000, ge=1, le=65535)
    bind: str = "0.0.0.0"
    python: str = "python3"
    health_path: str = "/health"
    health_timeout: float = Field(default=40.0, gt=0)
    backups_keep: int = Field(default=10, ge=1)  # online DB backups kept in backups/
    bwlimit_kbps: int | None = Field(default=None, ge=1)  # cap uploads (rsync --bwlimit)
    socket_activation: bool = True  # systemd holds the port: restarts refuse no connection
    # Windows hosts (WinRM). Credentials come from SGPFAB_WINRM_USER/SGPFAB_WINRM_PASSWORD or the
    # keyring (service "sgpfab", key = host name), never from this file.
    winrm_transport: Literal["ntlm", "kerberos", "basic", "certificate", "credssp"] = "ntlm"
    winrm_port: int = Field(default=5986, ge=1, le=65535)
    winrm_https: bool = True
    winrm_cert_validation: bool = True
    winrm_ca_trust_path: str | None = None
    winrm_cert_pem: str | None = None  # client certificate (transport: certificate)
    winrm_cert_key_pem: str | None = None
    winrm_max_envelope_kb: int = Field(default=150, ge=32)  # the server's MaxEnvelopeSizekb

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        if not SERVICE_RE.fullmatch(v):
            raise ValueError(f"invalid service name {v!r}")
        return v

    @field_validator("user", "run_as")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None and not USER_RE.fullmatch(v):
            raise ValueError(f"invalid user name {v!r}")
        return v

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, v: str) -> str:
        if not re.fullmatch(r"^/[A-Za-z0-9._/-]*$", v):
            raise ValueError(f"invalid health path {v!r}")
        return v

    @field_validator("bind", "hostname")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"^[A-Za-z0-9.:_-]+$", v):
            raise ValueError(f"invalid address {v!r}")
        return v


class Host(HostSettings):
    """One host of the fleet, with its settings resolved."""

    name: str
    groups: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> "Host":
        if self.os == "linux":
            p = self.api_root
            if not POSIX_PATH_RE.fullmatch(p) or p == "/" or ".." in p.split("/"):
                raise ValueError(f"api_root must be an absolute path without '..': {p!r}")
        elif not WINDOWS_PATH_RE.fullmatch(self.api_root) or ".." in self.api_root.split("\\"):
            raise ValueError(f"api_root must be an absolute Windows path like C:\\api: {self.api_root!r}")
        if self.service_user == "root":
            raise ValueError("the service must not run as root: set run_as to an unprivileged user")
        if self.os == "windows" and self.winrm_transport == "basic" and not self.winrm_https:
            raise ValueError("WinRM basic authentication is only allowed over HTTPS")
        return self

    @property
    def address(self) -> str:
        return self.hostname or self.name

    @property
    def service_user(self) -> str | None:
        return self.run_as or self.user


class AppSettings(BaseModel):
    """What to deploy: the app's source folder and its locked requirements."""

    model_config = ConfigDict(extra="forbid")

    source: str = "examples/sgp_api"
    requirements: str = "requirements.txt"
    module: str = "main:app"
    # Run in the new release (its venv on PATH, its .env exported) after the DB backup and
    # before the switch, e.g. "python scripts/migrate.py" or "alembic upgrade head".
    migrate: str | None = None
    python_version: str = "3.11"
    platforms: list[str] = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"]


class InventoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ssh_config: str | None = None
    known_hosts: str | None = None
    defaults: dict = {}
    hosts: dict[str, dict | None]
    groups: dict[str, list[str]] = {}
    app: AppSettings = AppSettings()


class Inventory:
    """Hosts and groups loaded from one YAML file."""

    def __init__(self, path: Path, data: InventoryFile, hosts: dict[str, Host]):
        self.path = path
        self.data = data
        self.hosts = hosts
        self.groups = data.groups
        base = path.parent
        self.ssh_config = _rel(base, data.ssh_config)
        self.known_hosts = _rel(base, data.known_hosts)
        for key, p in (("ssh_config", self.ssh_config), ("known_hosts", self.known_hosts)):
            if p is not None and not p.is_file():
                raise InventoryError(f"{path}: {key} file not found: {p}")
        self.app = data.app
        self.app_source = _rel(base, data.app.source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Inventory":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise InventoryError(f"inventory not found: {path}") from None
        except yaml.YAMLError as e:
            raise InventoryError(f"inventory {path} is not valid YAML: {e}") from None
        try:
            data = InventoryFile.model_validate(raw or {})
            hosts = {}
            for name, settings in data.hosts.items():
                if not NAME_RE.fullmatch(name):
                    raise InventoryError(f"{path}: invalid host name {name!r}")
                groups = tuple(g for g, members in data.groups.items() if name in members)
                hosts[name] = Host.model_validate({**data.defaults, **(settings or {}), "name": name, "groups": groups})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise InventoryError(f"{path}: {where}: {first['msg']}") from None
        for group, members in data.groups.items():
            if not NAME_RE.fullmatch(group) or group in hosts:
                raise InventoryError(f"{path}: invalid group name {group!r} (must not clash with a host)")
            unknown = [m for m in members if m not in hosts]
            if unknown:
                raise InventoryError(f"{path}: group {group!r} names unknown host(s): {', '.join(unknown)}")
        return cls(path, data, hosts)

    def resolve(self, names: list[str] | str) -> list[Host]:
        """Expand host and group names (a list or 'a,b') into hosts, in order, without repeats."""
        if isinstance(names, str):
            names = [n for n in names.split(",")]
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise InputError("no hosts given: use -H HOST[,HOST|GROUP...]")
        out: dict[str, Host] = {}
        for n in names:
            if n in self.hosts:
                out.setdefault(n, self.hosts[n])
            elif n in self.groups:
                for m in self.groups[n]:
                    out.setdefault(m, self.hosts[m])
            elif n == "all":
                for m, h in self.hosts.items():
                    out.setdefault(m, h)
            else:
                known = ", ".join(sorted([*self.hosts, *self.groups]))
                raise InputError(f"unknown host or group {n!r} (known: {known})")
        return list(out.values())


def _rel(base: Path, p: str | None) -> Path | None:
    if p is None:
        return None
    q = Path(os.path.expanduser(p))
    return (q if q.is_absolute() else (base / q)).resolve()


def default_inventory_path(project_root: Path) -> Path:
    """$SGPFAB_INVENTORY, else hosts/fleet.yaml in the project."""
    env = os.environ.get("SGPFAB_INVENTORY")
    return Path(env) if env else project_root / "hosts" / "fleet.yaml"
