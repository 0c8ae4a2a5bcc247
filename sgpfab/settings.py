"""An app's settings on one host: its environment, with secrets resolved on the controller.

The inventory names secrets (`env: {SECRET_KEY: {secret: shop_secret_key}}`); their values come
from, in order: the environment variable SGPFAB_SECRET_<NAME> (upper case, other characters as
`_`), the secrets file (inventory `secrets_file:` or $SGPFAB_SECRETS_FILE; YAML `name: value`;
it must be private to its owner and not tracked by git), or the OS keyring (service "sgpfab",
user NAME). Headless machines have no keyring: the first two always work without one.

Values are written on the host into shared/config/env (mode 0600, the service user's), which
every process of the release loads (systemd EnvironmentFile=); a `secret_file` is written to
shared/config/files/NAME and the variable holds its path. Secrets are never printed (plan masks
them), never logged, never in the audit log, never in a bundle. The password of a Windows
app's named run_as account is a secret too (`account_password`): it goes to the host only on a
script's stdin, never into a settings file.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .inventory import Instance, SecretRef
from .layout import Layout

MASK = "********"
PLACEHOLDER = re.compile(r"\{(api_root|shared|port|app|service|host|bind)\}")


class SecretStore:
    """Where secret values come from on the controller (see the module docstring)."""

    def __init__(self, secrets_file: Path | None = None, use_keyring: bool = True):
        env_file = os.environ.get("SGPFAB_SECRETS_FILE")
        self.path = Path(env_file) if env_file else secrets_file
        self.use_keyring = use_keyring
        self._file: dict[str, str] | None = None

    @staticmethod
    def env_name(name: str) -> str:
        return "SGPFAB_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()

    def _load_file(self) -> dict[str, str]:
        if self._file is not None:
            return self._file
        self._file = {}
        if self.path is None or not self.path.exists():
            return self._file
        check_private(self.path)
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"secrets file {self.path} cannot be read: {str(e).splitlines()[0]}") from None
        if not isinstance(data, dict) or not all(isinstance(v, (str, int, float)) for v in data.values()):
            raise InputError(f"secrets file {self.path} must be a YAML mapping of name: value")
        self._file = {str(k): str(v) for k, v in data.items()}
        return self._file

    def get(self, name: str) -> str | None:
        value = os.environ.get(self.env_name(name))
        if value is not None:
            return value
        value = self._load_file().get(name)
        if value is not None:
            return value
        if not self.use_keyring:
            return None
        try:
            import keyring
            from keyring.errors import KeyringError
        except ImportError:
            return None
        try:
            password: str | None = keyring.get_password("sgpfab", name)
            return password
        except (KeyringError, RuntimeError, OSError):
            return None


def check_private(path: Path) -> None:
    """A secrets file must belong to the current user, be readable by nobody else, and not be a
    file git would track."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"secrets file {path} is not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InputError(f"secrets file {path} belongs to another user")
    if st.st_mode & 0o077:
        raise InputError(f"secrets file {path} is readable by others (mode {st.st_mode & 0o777:o}): chmod 600 it")
    try:
        top = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10
        )
        if top.returncode == 0:
            ignored = subprocess.run(
                ["git", "-C", str(path.parent), "check-ignore", "-q", str(path)], capture_output=True, timeout=10
            )
            if ignored.returncode != 0:
                raise InputError(
                    f"secrets file {path} is inside the git repository {top.stdout.strip()} and not"
                    " ignored: keep it outside the repository"
                )
    except (OSError, subprocess.TimeoutExpired):
        pass


@dataclass
class Settings:
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # secret file name -> content
    secret_keys: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {"env": self.env, "files": self.files, "secret_keys": self.secret_keys}

    def masked(self) -> dict[str, str]:
        return {k: (MASK if k in self.secret_keys else v) for k, v in sorted(self.env.items())}


def builtins(inst: Instance) -> dict[str, str]:
    """Variables sgpfab provides (the inventory's env may override them)."""
    lay = Layout.for_instance(inst)
    out = {"PORT": str(inst.port), "HOST": inst.bind}
    if inst.database.engine == "sqlite":
        path = lay.database(inst.database.path).replace("\\", "/")
        out[inst.database.env] = "sqlite:///" + path
    return out


def expand(value: str, inst: Instance) -> str:
    lay = Layout.for_instance(inst)
    names = {
        "api_root": lay.root,
        "shared": lay.shared,
        "port": str(inst.port),
        "app": inst.app,
        "service": inst.service,
        "host": inst.host.name,
        "bind": inst.bind,
    }
    return PLACEHOLDER.sub(lambda m: names[m.group(1)], value)


def resolve(inst: Instance, store: SecretStore) -> Settings:
    """The settings of one instance; InputError (one line, naming host and secret, never a
    value) when a required secret is missing or unusable."""
    s = Settings(env=builtins(inst))
    lay = Layout.for_instance(inst)
    for key, value in inst.env.items():
        if isinstance(value, SecretRef):
            secret = store.get(value.name)
            if secret is None:
                if value.required:
                    raise InputError(
                        f"{inst.host.name}: secret {value.name!r} (for {key}) is not set: export"
                        f" {SecretStore.env_name(value.name)}, add it to the secrets file, or store it"
                        " in the keyring (service 'sgpfab')"
                    )
                continue  # an optional secret that is not set leaves the variable as it was
            if value.is_file:
                s.files[value.name] = secret
                s.env[key] = lay.secret_files + ("\\" if lay.windows else "/") + value.name
            else:
                if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", secret):
                    raise InputError(
                        f"{inst.host.name}: secret {value.name!r} has a line break or control character:"
                        f" use secret_file: {value.name} for multi-line values"
                    )
                s.env[key] = secret
                s.secret_keys.append(key)
        else:
            s.env[key] = expand(value, inst)
    if inst.database.engine == "postgresql":
        url = s.env.get(inst.database.env)
        if not url:
            raise InputError(
                f"{inst.host.name}: database engine postgresql needs {inst.database.env} in env"
                f" (e.g. {inst.database.env}: {{secret: {inst.app}_database_url}})"
            )
        check_postgres_url(url, inst)
    s.secret_keys.sort()
    return s


def check_postgres_url(url: str, inst: Instance) -> None:
    """A usable postgresql:// URL (the message never shows it: it holds a password)."""
    try:
        u = urllib.parse.urlsplit(url)
        ok = (
            u.scheme.split("+", 1)[0] in ("postgres", "postgresql")
            and bool(u.path.strip("/"))
            and bool(u.hostname)
            and bool(u.username)
        )
        _ = u.port
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            f"{inst.host.name}: {inst.database.env} is not a valid PostgreSQL URL (expected"
            " postgresql://USER:PASSWORD@HOST:PORT/DBNAME)"
        )


def account_password(inst: Instance, store: SecretStore) -> str | None:
    """The password of a Windows app's named run_as account (`run_as_password: {secret: NAME}`),
    resolved here on the controller; None when the app has none (virtual accounts, a gMSA).
    InputError (one line, naming host and secret, never a value) when the secret is not set."""
    ref = inst.run_as_password
    if ref is None:
        return None
    value = store.get(ref.name)
    if value is None:
        raise InputError(
            f"{inst.host.name}: secret {ref.name!r} (for run_as_password) is not set: export"
            f" {SecretStore.env_name(ref.name)}, add it to the secrets file, or store it in the keyring"
            " (service 'sgpfab')"
        )
    if not value or "\0" in value:
        raise InputError(f"{inst.host.name}: secret {ref.name!r} (for run_as_password) is empty or holds a NUL")
    return value
