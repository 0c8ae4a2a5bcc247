"""What an app is: its processes, hooks, dependencies and targets (recorded in every bundle).

These models are the `apps.NAME` part of the inventory that describes the app itself; a bundle
records them (validated again when a bundle is loaded) and its content digest covers them, so
what runs on a host is exactly what was built and verified.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from . import validate as v

SERVERS = ("uvicorn", "gunicorn", "command")
# The servers sgpfab adds to a release venv when the app's own dependencies lack them.
SERVER_PINS = {
    "gunicorn": "gunicorn==27.0.1",
    "uvicorn": "uvicorn==0.54.0",
    "uvicorn-worker": "uvicorn-worker==0.4.0",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebProcess(Strict):
    """The process that serves HTTP on the app's port."""

    server: Literal["uvicorn", "gunicorn", "command"] = "uvicorn"
    app: str | None = None  # 'module:attr' (uvicorn, gunicorn); gunicorn also 'module:factory()'
    factory: bool = False  # uvicorn: `app` is a factory to call
    interface: Literal["wsgi", "asgi"] = "wsgi"  # gunicorn: asgi runs uvicorn's worker class
    workers: int = Field(default=1, ge=1, le=64)
    args: tuple[str, ...] = ()  # extra server arguments, one token each
    command: str | None = None  # server: command — any command that serves on $PORT
    socket: bool = False  # server: command — the command takes the listening socket (LISTEN_FDS)

    @field_validator("app")
    @classmethod
    def _app(cls, value: str | None) -> str | None:
        return None if value is None else v.check(v.APP_PATH, value, "app path")

    @field_validator("args")
    @classmethod
    def _args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.check(v.SERVER_ARG, a, "server argument") for a in value)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        return None if value is None else v.one_line(value, "web command")

    @model_validator(mode="after")
    def _shape(self) -> WebProcess:
        if self.server == "command":
            if not self.command:
                raise ValueError("server: command needs a command")
        else:
            if not self.app:
                raise ValueError(f"server: {self.server} needs app: MODULE:ATTRIBUTE")
            if self.command or self.socket:
                raise ValueError("command and socket are for server: command only")
        if self.server != "uvicorn" and self.factory:
            raise ValueError("factory: true is for uvicorn; with gunicorn write app: 'module:create_app()'")
        if self.server == "uvicorn" and self.app and self.app.endswith("()"):
            raise ValueError("with uvicorn, name the factory without () and set factory: true")
        return self

    @property
    def overlaps(self) -> bool:
        """Whether a new release's web process starts beside the old one on the shared socket
        (sgpfab's launchers can tell the two apart; an arbitrary command cannot)."""
        return self.server in ("uvicorn", "gunicorn")

    @property
    def socket_activated(self) -> bool:
        return self.server != "command" or self.socket


class Process(Strict):
    """Any other long-running process of the release (a worker, a scheduler)."""

    command: str

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        return v.one_line(value, "process command")


class Target(Strict):
    """A kind of host the bundle's wheels must install on."""

    os: Literal["linux", "windows"] = "linux"
    arch: Literal["x86_64", "aarch64"] = "x86_64"
    glibc: str = "2.36"  # linux: the oldest glibc of such hosts
    python: str = "3.11"

    @field_validator("glibc", "python")
    @classmethod
    def _dotted(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"\d{1,2}\.\d{1,3}", value, re.ASCII):
            raise ValueError(f"expected MAJOR.MINOR, got {value!r}")
        return value

    @property
    def key(self) -> str:
        py = f"cp{self.python.replace('.', '')}"
        return f"{py}-{self.arch}-glibc{self.glibc}" if self.os == "linux" else f"{py}-{self.os}-{self.arch}"

    def covers(self, arch: str, glibc: str, python: str, os: str = "linux") -> bool:
        """Whether wheels for this target install on a host with this OS, arch, glibc and Python."""
        if os != self.os or arch != self.arch or _ver(python)[:2] != _ver(self.python):
            return False
        return os != "linux" or _ver(glibc) >= _ver(self.glibc)


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


class Dependencies(Strict):
    """Where the app's dependencies come from."""

    source: Literal["auto", "uv", "requirements"] = "auto"
    file: str = "requirements.txt"  # source: requirements
    extras: tuple[str, ...] = ()  # uv: optional dependency groups to include
    install_project: Literal["auto", "yes", "no"] = "auto"  # uv: install the project itself

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        return v.rel_path(value, "requirements file")

    @field_validator("extras")
    @classmethod
    def _extras(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.check(v.NAME, e, "extra") for e in value)


class Schema(Strict):
    """How schema.sql is made: `auto` detects Alembic, Django or SQLAlchemy/SQLModel metadata;
    `command` prints the SQL (run in the app's environment on the controller); `none` omits it."""

    source: Literal["auto", "command", "none"] = "auto"
    command: str | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        return None if value is None else v.one_line(value, "schema command")

    @model_validator(mode="after")
    def _shape(self) -> Schema:
        if (self.source == "command") != bool(self.command):
            raise ValueError("schema: set command together with source: command")
        return self


class ReleaseCommand(Strict):
    """A release command that runs only when a file matching `when_changed` changed."""

    command: str
    when_changed: tuple[str, ...]  # gitignore-style patterns over the release's files

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        return v.one_line(value, "release command")

    @field_validator("when_changed")
    @classmethod
    def _when_changed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one file pattern")
        return _patterns_ok(tuple(v.one_line(p, "when_changed pattern", 500) for p in value))


def _patterns_ok(patterns: tuple[str, ...]) -> tuple[str, ...]:
    import pathspec

    for p in patterns:
        try:
            pathspec.GitIgnoreSpec.from_lines([p])
        except Exception as e:  # pathspec raises several types for a malformed pattern
            raise ValueError(f"when_changed pattern {p!r} is not a valid gitignore-style pattern ({e})") from None
    return patterns


def _split_release(data: Any) -> Any:
    """`release` items are commands or {command, when_changed}: kept as two parallel tuples
    (`release`, `release_when_changed`) so what reads `release` on hosts is unchanged."""
    if not isinstance(data, dict) or not isinstance(data.get("release"), (list, tuple)):
        return data
    items = data["release"]
    if not any(isinstance(i, (dict, ReleaseCommand)) for i in items):
        return data
    if data.get("release_when_changed"):
        raise ValueError("release: give when_changed in the release items or in release_when_changed, not both")
    commands: list[str] = []
    patterns: list[tuple[str, ...]] = []
    for n, item in enumerate(items, start=1):
        if isinstance(item, str):
            commands.append(item)
            patterns.append(())
            continue
        try:
            rc = item if isinstance(item, ReleaseCommand) else ReleaseCommand.model_validate(item)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ValueError(
                f"release item {n}{' ' + where if where else ''}: {first['msg'].removeprefix('Value error, ')}"
            ) from None
        commands.append(rc.command)
        patterns.append(rc.when_changed)
    return {**data, "release": commands, "release_when_changed": patterns}


class AppSpec(Strict):
    """The app itself, as configured under `apps.NAME` (minus where and how it runs on a host)."""

    processes: dict[str, WebProcess | Process]
    release: tuple[str, ...] = ()  # run in the new release before the switch (migrate, collectstatic)
    # per release command: the file patterns whose change makes it run (() = always); () = all always
    release_when_changed: tuple[tuple[str, ...], ...] = ()
    build: tuple[str, ...] = ()  # run on the controller before bundling (compiled assets)
    writable: tuple[str, ...] = ()  # release directories the service user may write (collectstatic)
    dependencies: Dependencies = Dependencies()
    targets: tuple[Target, ...] = (Target(),)
    include: tuple[str, ...] = ()  # gitignore-style patterns kept even when ignored
    exclude: tuple[str, ...] = ()  # gitignore-style patterns left out
    schema_: Schema = Field(default=Schema(), alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _release_items(cls, data: Any) -> Any:
        return _split_release(data)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Leave `release_when_changed` out when unused, so specs without it keep their digest."""
        out = handler(self)
        if not self.release_when_changed and isinstance(out, dict):
            out.pop("release_when_changed", None)
        return out

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, value: Any) -> dict[str, WebProcess | Process]:
        if not isinstance(value, dict) or not value:
            raise ValueError("processes: give at least one process")
        from pydantic import ValidationError

        out: dict[str, WebProcess | Process] = {}
        for name, p in value.items():
            v.check(v.PROCESS, name, "process name (lower case letters, digits, _)")
            try:
                if name == "web":
                    out[name] = WebProcess.model_validate(p) if not isinstance(p, WebProcess) else p
                elif isinstance(p, str):
                    out[name] = Process(command=p)
                else:
                    out[name] = Process.model_validate(p) if not isinstance(p, Process) else p
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(x) for x in first["loc"])
                msg = first["msg"].removeprefix("Value error, ")
                raise ValueError(f".{name}{'.' + where if where else ''}: {msg}") from None
        return out

    @field_validator("release", "build")
    @classmethod
    def _hooks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.one_line(c, "hook command") for c in value)

    @field_validator("release_when_changed")
    @classmethod
    def _when_changed(cls, value: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        if not any(value):
            return ()
        return tuple(_patterns_ok(tuple(v.one_line(p, "when_changed pattern", 500) for p in ps)) for ps in value)

    @model_validator(mode="after")
    def _when_changed_shape(self) -> AppSpec:
        if self.release_when_changed and len(self.release_when_changed) != len(self.release):
            raise ValueError("release_when_changed: give one pattern list per release command")
        return self

    def when_changed(self, index: int) -> tuple[str, ...]:
        """The patterns of release command `index` (1-based); () when it always runs."""
        return self.release_when_changed[index - 1] if self.release_when_changed else ()

    @field_validator("writable")
    @classmethod
    def _writable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.rel_path(p, "writable directory") for p in value)

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.one_line(p, "file pattern", 500) for p in value)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: tuple[Target, ...]) -> tuple[Target, ...]:
        if not value:
            raise ValueError("targets: give at least one")
        return value

    @property
    def web(self) -> WebProcess | None:
        p = self.processes.get("web")
        return p if isinstance(p, WebProcess) else None

    @property
    def others(self) -> dict[str, Process]:
        return {n: p for n, p in self.processes.items() if isinstance(p, Process)}

    def servers_needed(self) -> list[str]:
        """Distributions sgpfab's launchers need for the web process (added when missing)."""
        web = self.web
        if web is None or web.server == "command":
            return []
        if web.server == "uvicorn":
            return ["uvicorn"]
        return ["gunicorn", "uvicorn-worker", "uvicorn"] if web.interface == "asgi" else ["gunicorn"]
