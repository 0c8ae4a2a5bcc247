"""The inventory: hosts, groups and apps from one YAML file, resolved into typed objects.

    ssh_config: ssh_config            # optional, relative to this file
    known_hosts: known_hosts
    secrets_file: ~/.config/sgpfab/secrets.yaml   # optional; see settings.py
    defaults: {user: deploy}          # host settings for every host
    hosts:
      prod1: {hostname: 10.0.0.5, apps: {shop: {port: 8001}}}
    groups:
      staging: [staging1]             # a list of hosts, or:
      prod: {hosts: [prod1, prod2], apps: {shop: {env: {DEBUG: "0"}}}}
    apps:
      shop: {source: ../shop, processes: {web: {server: gunicorn, app: "shop:app"}}, ...}

Host settings merge defaults < groups (in file order) < host. An app's settings on one host merge
apps.NAME < groups' apps.NAME < the host's apps.NAME (`env` merges key by key; a null value
removes a key). Every value is validated here, before anything connects anywhere.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import validate as v
from . import winaccount
from .appspec import AppSpec
from .errors import InputError, InventoryError

LINUX_PYTHON = "/usr/bin/python3"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostSettings(Strict):
    """How to reach a host and what it runs; settable in defaults, groups and hosts."""

    os: Literal["linux", "windows"] = "linux"
    hostname: str | None = None  # address to connect to; default: the name (an ssh_config alias)
    ssh_port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None  # login user; default: ssh_config's User, else the local user
    python: str | None = None  # the host's interpreter (venvs, the sgpfab helper)
    bwlimit_kbps: int | None = Field(default=None, ge=1)  # cap uploads (rsync --bwlimit)
    connection: Literal["ssh", "winrm", "local"] | None = None  # default: ssh (linux), winrm (windows)
    # Windows hosts (WinRM). Credentials come from SGPFAB_WINRM_USER/SGPFAB_WINRM_PASSWORD or the
    # keyring (service "sgpfab", key = host name), never from this file.
    winrm_transport: Literal["ntlm", "kerberos", "basic", "certificate", "credssp"] = "ntlm"
    winrm_port: int = Field(default=5986, ge=1, le=65535)
    winrm_https: bool = True
    winrm_cert_validation: bool = True
    winrm_ca_trust_path: str | None = None
    winrm_cert_pem: str | None = None
    winrm_cert_key_pem: str | None = None
    winrm_max_envelope_kb: int = Field(default=150, ge=32)

    @field_validator("hostname")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else v.check(v.ADDRESS, value, "address")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not (v.POSIX_USER.fullmatch(value) or v.WINDOWS_USER.fullmatch(value)):
            raise ValueError(f"invalid user name {value!r}")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        return _interpreter(value)


class Host(HostSettings):
    """One host, settings resolved."""

    name: str
    groups: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return self.hostname or self.name

    @property
    def interpreter(self) -> str:
        return self.python or ("python.exe" if self.os == "windows" else LINUX_PYTHON)

    @property
    def transport_kind(self) -> str:
        return self.connection or ("winrm" if self.os == "windows" else "ssh")


class SecretRef(Strict):
    """An environment value that comes from the controller's secrets, never from the inventory."""

    secret: str | None = None  # single-line value, written into the settings file
    secret_file: str | None = None  # any value (keys, certificates): a file; the variable holds its path
    required: bool = True

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        names = [n for n in (self.secret, self.secret_file) if n is not None]
        if len(names) != 1:
            raise ValueError("give exactly one of secret: NAME or secret_file: NAME")
        v.check(v.SECRET_NAME, names[0], "secret name")
        return self

    @property
    def name(self) -> str:
        return self.secret or self.secret_file or ""

    @property
    def is_file(self) -> bool:
        return self.secret_file is not None


EnvValue = str | SecretRef


class HealthCheck(Strict):
    """How the health gate decides that a release is serving."""

    type: Literal["http", "process"] = "http"  # process: every process running and not restarting
    path: str = "/health"
    status: tuple[int, ...] = (200,)  # accepted HTTP status codes
    body: str | None = None  # a regular expression the body must contain
    version: bool = False  # the body is JSON whose "version" must be the release's version
    host_header: str | None = None  # Host header to send (e.g. a name in Django's ALLOWED_HOSTS)
    timeout: float = Field(default=60.0, gt=0, le=3600)  # seconds a new release has to be healthy
    settle: float = Field(
        default=5.0, ge=0, le=300
    )  # seconds every process must stay up (catches a crash after import)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> tuple[int, ...]:
        values = (value,) if isinstance(value, int) else tuple(value)
        if not values or any(not (100 <= int(s) <= 599) for s in values):
            raise ValueError("status: HTTP codes between 100 and 599")
        return tuple(int(s) for s in values)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return v.check(v.URL_PATH, value, "health path")

    @field_validator("body")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import re

        v.one_line(value, "health body pattern", 500)
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"health body pattern is not a regular expression: {e}") from None
        return value

    @field_validator("host_header")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else v.check(v.ADDRESS, value, "host header")


class Database(Strict):
    """The app's database, which sgpfab backs up before changes and restores on request."""

    engine: Literal["sqlite", "postgresql", "none"] = "sqlite"
    path: str = "db/app.db"  # sqlite: under shared/
    env: str = "DATABASE_URL"  # the variable the app reads its database URL from

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return v.rel_path(value, "database path")

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        return v.check(v.ENV_KEY, value, "environment variable name")


class InstanceSettings(Strict):
    """Where and how an app runs on a host: set under apps.NAME, overridable per group and host."""

    api_root: str | None = None  # default /srv/APP (C:\\apps\\APP on Windows)
    service: str | None = None  # default: the app name
    port: int = Field(default=8000, ge=1, le=65535)
    bind: str = "0.0.0.0"
    run_as: str | None = None  # the service's user; default: the login user (never root)
    run_as_password: SecretRef | None = None  # Windows: {secret: NAME}, the password of a named run_as account
    env: dict[str, EnvValue] = Field(default_factory=dict)
    health: HealthCheck = HealthCheck()
    database: Database = Database()
    backups_keep: int = Field(default=10, ge=1, le=1000)
    python: str | None = None  # interpreter for this app's venvs (default: the host's)

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        return v.check(v.ADDRESS, value, "bind address")

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        return None if value is None else v.check(v.SERVICE, value, "service name")

    @field_validator("run_as")
    @classmethod
    def _run_as(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not (
            v.POSIX_USER.fullmatch(value) or v.WINDOWS_USER.fullmatch(value) or winaccount.ACCOUNT.fullmatch(value)
        ):
            raise ValueError(f"invalid user name {value!r}")
        return value

    @field_validator("run_as_password")
    @classmethod
    def _run_as_password(cls, value: SecretRef | None) -> SecretRef | None:
        if value is not None and (value.secret is None or not value.required):
            raise ValueError("run_as_password must be {secret: NAME} (a required, single-line secret)")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> dict[str, str | SecretRef]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("env: a mapping of NAME: value")
        out: dict[str, str | SecretRef] = {}
        for key, val in value.items():
            if not isinstance(key, str):  # YAML reads ON:/OFF:/1: as booleans and numbers
                raise ValueError(f"environment variable name {key!r} is not text: quote it")
            v.check(v.ENV_KEY, key, "environment variable name")
            if val is None:
                continue
            if isinstance(val, SecretRef):
                out[key] = val
            elif isinstance(val, dict):
                try:
                    out[key] = SecretRef.model_validate(val)
                except ValidationError as e:
                    msg = e.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f".{key}: {msg}") from None
            elif isinstance(val, bool):
                out[key] = "1" if val else "0"
            elif isinstance(val, (str, int, float)):
                out[key] = v.one_line(str(val), f"env {key}", 4096, allow_empty=True)
            else:
                raise ValueError(f".{key}: a value must be text, a number, or {{secret: NAME}}")
        return out

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        return _interpreter(value)


class Instance(InstanceSettings):
    """One app on one host, with every setting resolved."""

    app: str
    host: Host
    api_root: str
    service: str

    @model_validator(mode="after")
    def _paths(self) -> Instance:
        root = self.api_root
        if self.host.os == "linux":
            parts = root.split("/")[1:]
            if (
                not v.POSIX_ABS_PATH.fullmatch(root)
                or posixpath.normpath(root) != root
                or root == "/"
                or any(p in ("", ".", "..") for p in parts)
            ):
                raise ValueError(
                    f"api_root must be a normalised absolute path below / (no '.', '..' or '//'): {root!r}"
                )
        else:
            parts = root.split("\\")[1:]
            if (
                not v.WINDOWS_ABS_PATH.fullmatch(root)
                or not parts
                or any(p.strip() in ("", ".", "..") for p in parts)
                or any(p != p.rstrip(" .") for p in parts)
                or root != root.strip()
            ):  # Windows drops them
                raise ValueError(f"api_root must be a directory below a drive root, like C:\\apps\\shop: {root!r}")
        if self.host.os == "windows":
            self._windows_account()
        elif self.run_as is not None:
            if not v.POSIX_USER.fullmatch(self.run_as):
                raise ValueError(f"invalid user name {self.run_as!r} for a linux host")
            if self.run_as == "root":
                raise ValueError(f"the service must not run as {self.run_as}: set run_as to an unprivileged user")
        if self.host.os == "linux" and self.run_as_password is not None:
            raise ValueError("run_as_password is for Windows hosts only (Linux services need no password)")
        if self.host.os == "linux" and self.host.user is not None and not v.POSIX_USER.fullmatch(self.host.user):
            raise ValueError(f"invalid user name {self.host.user!r} for a linux host")
        return self

    def _windows_account(self) -> None:
        """run_as on Windows: none (virtual accounts), a named account with its password's
        secret, or a gMSA without one (see winaccount)."""
        if self.run_as is None:
            if self.run_as_password is not None:
                raise ValueError("run_as_password is set but run_as is not: name the account in run_as")
            return
        winaccount.check(self.run_as)
        if winaccount.is_gmsa(self.run_as) and self.run_as_password is not None:
            raise ValueError(
                f"run_as {self.run_as} is a group managed service account: it takes no"
                " run_as_password (Windows gets its password from the domain); remove it"
            )
        if not winaccount.is_gmsa(self.run_as) and self.run_as_password is None:
            raise ValueError(
                f"run_as {self.run_as} needs run_as_password: {{secret: NAME}} (the account's password,"
                " from the controller's secrets)"
            )

    @property
    def interpreter(self) -> str:
        return self.python or self.host.interpreter


def _interpreter(value: str | None) -> str | None:
    if value is not None and not (
        v.POSIX_ABS_PATH.fullmatch(value)
        or v.WINDOWS_ABS_PATH.fullmatch(value)
        or value in ("python", "python3", "python.exe")
    ):
        raise ValueError(f"python must be an absolute path to an interpreter: {value!r}")
    return value


class AppConfig(InstanceSettings):
    """`apps.NAME`: the app (its spec) plus its default instance settings."""

    source: str
    hosts: tuple[str, ...] | None = None  # host and group names it is deployed to (default: all)
    spec: AppSpec

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        """Pull the AppSpec fields out of the flat `apps.NAME` mapping."""
        if not isinstance(data, dict) or "spec" in data:
            return data
        spec_keys = set(AppSpec.model_fields) | {"schema"}
        spec = {k: data[k] for k in list(data) if k in spec_keys}
        rest = {k: val for k, val in data.items() if k not in spec_keys}
        return {**rest, "spec": spec}


class GroupFile(Strict):
    hosts: tuple[str, ...]
    apps: dict[str, dict[Any, Any]] = Field(default_factory=dict)
    model_config = ConfigDict(extra="allow", frozen=True)  # host settings, validated on each host


class InventoryFile(Strict):
    ssh_config: str | None = None
    known_hosts: str | None = None
    secrets_file: str | None = None
    defaults: dict[Any, Any] = Field(default_factory=dict)
    hosts: dict[str, dict[Any, Any] | None]
    groups: dict[str, list[str] | GroupFile] = Field(default_factory=dict)
    apps: dict[str, dict[Any, Any]]


class App:
    """One app of the inventory: its name, spec, source folder and instance settings."""

    def __init__(self, name: str, config: AppConfig, source: Path):
        self.name, self.config, self.source = name, config, source

    @property
    def spec(self) -> AppSpec:
        return self.config.spec


class Inventory:
    """Hosts, groups and apps loaded from one YAML file."""

    def __init__(self, path: Path, data: InventoryFile):
        self.path = path
        self.file = data
        base = path.parent
        self.ssh_config = _rel(base, data.ssh_config)
        self.known_hosts = _rel(base, data.known_hosts)
        self.secrets_file = _rel(base, data.secrets_file)
        for key, p in (("ssh_config", self.ssh_config), ("known_hosts", self.known_hosts)):
            if p is not None and not p.is_file():
                raise InventoryError(f"{path}: {key} file not found: {p}")
        self.groups: dict[str, tuple[str, ...]] = {}
        self._group_settings: dict[str, dict[str, Any]] = {}
        self._group_apps: dict[str, dict[str, dict[str, Any]]] = {}
        for g, spec in data.groups.items():
            if not v.NAME.fullmatch(g) or g in data.hosts or g == "all":
                raise InventoryError(f"{path}: invalid group name {g!r} (must not clash with a host or 'all')")
            if isinstance(spec, GroupFile):
                extra = dict(spec.model_extra or {})
                _validated(path, f"groups.{g}", HostSettings, extra)
                self.groups[g], self._group_settings[g], self._group_apps[g] = spec.hosts, extra, spec.apps
            else:
                self.groups[g], self._group_settings[g], self._group_apps[g] = tuple(spec), {}, {}
            unknown = [m for m in self.groups[g] if m not in data.hosts]
            if unknown:
                raise InventoryError(f"{path}: group {g!r} names unknown host(s): {', '.join(unknown)}")
        self.hosts: dict[str, Host] = {}
        self._host_apps: dict[str, dict[str, dict[str, Any]]] = {}
        for name, raw in data.hosts.items():
            if not v.NAME.fullmatch(name) or name == "all":
                raise InventoryError(f"{path}: invalid host name {name!r}")
            raw = dict(raw or {})
            self._host_apps[name] = raw.pop("apps", None) or {}
            groups = tuple(g for g, members in self.groups.items() if name in members)
            merged = dict(data.defaults)
            for g in groups:
                merged.update(self._group_settings[g])
            merged.update(raw)
            self.hosts[name] = _validated(path, f"hosts.{name}", Host, {**merged, "name": name, "groups": groups})
        self.apps: dict[str, App] = {}
        for name, raw in data.apps.items():
            if not v.NAME.fullmatch(name):
                raise InventoryError(f"{path}: invalid app name {name!r}")
            cfg = _validated(path, f"apps.{name}", AppConfig, raw or {})
            self.apps[name] = App(name, cfg, _rel(base, cfg.source) or base)
            if cfg.hosts is not None:
                try:
                    self.resolve(list(cfg.hosts), where=f"apps.{name}.hosts")
                except InputError as e:
                    raise InventoryError(f"{path}: {e}") from None
        for owner, apps in [
            *(("groups." + g, a) for g, a in self._group_apps.items()),
            *(("hosts." + h, a) for h, a in self._host_apps.items()),
        ]:
            unknown = [a for a in apps if a not in self.apps]
            if unknown:
                raise InventoryError(f"{path}: {owner}.apps names unknown app(s): {', '.join(unknown)}")
        for h in self.hosts.values():  # every instance must validate, not only the ones used today
            for app in self.apps.values():
                if self.deploys(app, h):
                    self.instance(app.name, h.name)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Inventory:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise InventoryError(f"inventory not found: {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InventoryError(f"inventory {path} cannot be read: {e}") from None
        except yaml.YAMLError as e:
            raise InventoryError(f"inventory {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if isinstance(raw, dict) and "app" in raw and "apps" not in raw:
            raise InventoryError(
                f"{path}: the inventory format changed: name your app under apps: (e.g. apps: {{myapp: ...}})"
                " and move api_root/service/port from host settings into it; see docs/inventory.md"
            )
        data = _validated(path, "", InventoryFile, raw or {})
        return cls(path, data)

    # -- names -------------------------------------------------------------------------------
    def resolve(self, names: list[str] | str, where: str = "-H") -> list[Host]:
        """Expand host and group names (a list or 'a,b'; 'all' for every host) into hosts, in
        order, without repeats."""
        if isinstance(names, str):
            names = names.split(",")
        names = [n.strip() for n in names if n and n.strip()]
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
                raise InputError(f"{where}: unknown host or group {n!r} (known: {known})")
        return list(out.values())

    def app(self, name: str | None) -> App:
        """The app named on the command line, or the only one."""
        if name is None:
            if len(self.apps) == 1:
                return next(iter(self.apps.values()))
            if not self.apps:
                raise InputError(f"{self.path.name} defines no apps: add one under apps:")
            raise InputError(f"several apps in {self.path.name}: choose one with --app ({', '.join(self.apps)})")
        if name not in self.apps:
            raise InputError(f"unknown app {name!r} (known: {', '.join(self.apps) or 'none'})")
        return self.apps[name]

    def deploys(self, app: App, host: Host) -> bool:
        if app.config.hosts is None:
            return True
        return host.name in {h.name for h in self.resolve(list(app.config.hosts))}

    def instance(self, app_name: str, host_name: str) -> Instance:
        """The app's settings on one host (merged and validated)."""
        app, host = self.apps[app_name], self.hosts[host_name]
        if not self.deploys(app, host):
            raise InputError(f"app {app_name} is not deployed on {host_name} (apps.{app_name}.hosts)")
        merged = app.config.model_dump(exclude={"source", "hosts", "spec"}, exclude_unset=True, by_alias=True)
        layers = [self._group_apps[g].get(app_name) or {} for g in host.groups]
        layers.append(self._host_apps[host_name].get(app_name) or {})
        for layer in layers:
            for key, value in layer.items():
                if key == "env" and isinstance(value, dict):
                    env = dict(merged.get("env") or {})
                    for k, val in value.items():
                        if val is None:
                            env.pop(k, None)
                        else:
                            env[k] = val
                    merged["env"] = env
                elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
        windows = host.os == "windows"
        merged.setdefault("api_root", f"C:\\apps\\{app_name}" if windows else f"/srv/{app_name}")
        merged.setdefault("service", app_name)
        if windows and merged.get("api_root"):
            merged["api_root"] = str(merged["api_root"]).rstrip("\\") or merged["api_root"]
            if len(merged["api_root"]) == 2:  # 'C:' after stripping 'C:\'
                merged["api_root"] += "\\"
        return _validated(
            self.path, f"apps.{app_name} on {host_name}", Instance, {**merged, "app": app_name, "host": host}
        )


_M = TypeVar("_M", bound=BaseModel)


def _validated(path: Path, where: str, model: type[_M], data: Any) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"] if x not in ("spec",))
        at = ".".join(p for p in (where, loc) if p)
        msg = first["msg"].removeprefix("Value error, ")
        if msg.startswith("."):  # the validator named a place inside the field: ".KEY: why"
            sub, _, msg = msg[1:].partition(": ")
            at = f"{at}.{sub}"
        raise InventoryError(f"{path}: {at}: {msg}") from None


def _rel(base: Path, p: str | None) -> Path | None:
    if p is None:
        return None
    q = Path(os.path.expanduser(p))
    return (q if q.is_absolute() else (base / q)).resolve()


def default_inventory_path(project_root: Path) -> Path:
    """$SGPFAB_INVENTORY, else hosts/fleet.yaml in the project."""
    env = os.environ.get("SGPFAB_INVENTORY")
    return Path(env) if env else project_root / "hosts" / "fleet.yaml"
