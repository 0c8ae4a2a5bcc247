"""The app instance an on-server apply works on: what the last deploy recorded on this host
(API_ROOT/.sgpfab/host.json), overridden by an optional config file (`sgpfab apply --config`).

The config file is YAML in the shape of one `apps.NAME` entry of the inventory, plus `app:`
(default: the bundle's app) and `host:` (the name used in messages; default: this machine's):

    app: shop
    api_root: /srv/shop
    port: 8001
    run_as: shop
    health: {path: /healthz}
    env: {SECRET_KEY: {secret: shop_secret_key}}

Keys that describe the app itself (source, processes, release, ...) may stay in a copied entry:
they are validated but not used, since the bundle records how the app runs. Every value goes
through the inventory's validators before anything runs.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import validate as v
from .appspec import AppSpec
from .errors import InputError
from .inventory import Host, Instance, InstanceSettings, _validated
from .layout import LAYOUT_FORMAT

INSTANCE_KEYS = frozenset(InstanceSettings.model_fields)
APP_KEYS = frozenset(AppSpec.model_fields) | {"schema", "source", "hosts"}  # validated, not used
OWN_KEYS = frozenset({"app", "host"})


@dataclass(frozen=True)
class HostConfig:
    """The resolved instance, and what decides how apply treats the host's settings."""

    inst: Instance
    login_user: str | None  # the user earlier deploys logged in as (None: never deployed)
    write_settings: bool  # True: write settings from `inst.env`; False: keep the host's


def load_config(path: Path) -> dict[str, Any]:
    """Read and check a config file: a mapping of known keys (InputError names the first problem)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"config file {path} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        raise InputError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping like `api_root: /srv/shop` (see docs/apply.md)")
    unknown = sorted(str(k) for k in raw if k not in INSTANCE_KEYS | APP_KEYS | OWN_KEYS)
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r} (see docs/apply.md)")
    for key in OWN_KEYS & set(raw):
        if not isinstance(raw[key], str) or not v.NAME.fullmatch(raw[key]):
            raise InputError(f"{path}: {key}: invalid name {raw[key]!r}")
    app_part = {k: raw[k] for k in raw if k in APP_KEYS - {"source", "hosts"}}
    if app_part:
        _validated(path, "", AppSpec, app_part)
    return dict(raw)


def recorded(text: str, where: str) -> tuple[dict[str, Any], str]:
    """Instance settings and login user from a host.json an earlier deploy wrote."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != LAYOUT_FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else None!r}")
        root, db = data["root"], dict(data["database"])
        out = {
            "api_root": root,
            "service": data["service"],
            "port": data["port"],
            "bind": data["bind"],
            "run_as": data["service_user"],
            "health": data["health"],
            "backups_keep": data["backups_keep"],
            "python": data["python"],
            "database": {"engine": db["engine"], "env": db["env"]},
        }
        shared = root.rstrip("/") + "/shared/"
        if db["engine"] == "sqlite" and isinstance(db.get("path"), str) and db["path"].startswith(shared):
            out["database"]["path"] = db["path"][len(shared) :]
        return out, str(data["login_user"])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(
            f"{where} is not a host record this sgpfab reads ({e}): deploy once from a controller, or pass --config"
        ) from None


def this_host(name: str | None = None) -> Host:
    """This machine as an inventory host reached without SSH."""
    if name is None:
        short = socket.gethostname().split(".")[0]
        name = short if v.NAME.fullmatch(short) else "localhost"
    return Host(name=name, os="linux", connection="local")


def resolve(
    bundle_app: str,
    app_flag: str | None,
    config: dict[str, Any] | None,
    config_path: Path | None,
    read: Callable[[str], str | None] = lambda p: Path(p).read_text() if os.path.isfile(p) else None,
) -> HostConfig:
    """The instance to apply `bundle_app`'s bundle to. `read(path)` returns a file's text, or None
    when it does not exist. InputError when the app names disagree or nothing describes the app."""
    config = dict(config or {})
    app = app_flag or config.get("app") or bundle_app
    if config.get("app") not in (None, app):
        raise InputError(f"--app {app} does not match app: {config['app']} in {config_path}")
    if app != bundle_app:
        raise InputError(f"the bundle is of app {bundle_app}, not {app}")
    host = this_host(config.get("host"))
    root = config.get("api_root") or f"/srv/{app}"
    if not isinstance(root, str) or not v.POSIX_ABS_PATH.fullmatch(root):
        raise InputError(f"{config_path}: api_root: invalid path {root!r}")
    record_path = root.rstrip("/") + "/.sgpfab/host.json"
    text = read(record_path)
    base: dict[str, Any] = {}
    login_user = None
    if text is not None:
        base, login_user = recorded(text, record_path)
    elif config_path is None:
        raise InputError(
            f"{app} was never deployed to {root} on this host (no {record_path}): pass --config FILE"
            " (see docs/apply.md)"
        )
    settings = {k: val for k, val in config.items() if k in INSTANCE_KEYS}
    merged = {**base, **settings}
    for key in ("health", "database"):  # a partial mapping in the file changes only what it names
        if isinstance(base.get(key), dict) and isinstance(settings.get(key), dict):
            merged[key] = {**base[key], **settings[key]}
    merged.setdefault("service", app)
    where = str(config_path) if config_path else record_path
    inst = _validated(Path(where), f"apps.{app}", Instance, {**merged, "api_root": root, "app": app, "host": host})
    return HostConfig(inst, login_user, write_settings=text is None or "env" in config)
