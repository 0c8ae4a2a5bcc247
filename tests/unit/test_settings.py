"""An app's settings on one host: secrets from the controller (env var > secrets file >
keyring), builtins, placeholders, and one-line errors that never show a secret value."""

import os
import subprocess
import sys
import types
from typing import Any

import pytest
from support.builders import app_with, inventory_data, load_inventory

from sgpfab.errors import InputError
from sgpfab.settings import (
    MASK,
    SecretStore,
    Settings,
    account_password,
    builtins,
    check_private,
    expand,
    resolve,
)

SECRET_VALUE = "s3cr3t-'quoted' $HOME \\ value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("SGPFAB_SECRET") or k == "SGPFAB_SECRETS_FILE":
            monkeypatch.delenv(k)
    monkeypatch.setitem(sys.modules, "keyring", None)  # no keyring unless a test installs one


def fake_keyring(monkeypatch, values: dict, *, broken: bool = False):
    """A stand-in for the `keyring` package (service 'sgpfab')."""
    errors: Any = types.ModuleType("keyring.errors")  # attributes set below

    class KeyringError(Exception):
        pass

    errors.KeyringError = KeyringError
    mod: Any = types.ModuleType("keyring")
    calls = []

    def get_password(service, name):
        calls.append((service, name))
        if broken:
            raise KeyringError("no backend")
        return values.get(name)

    mod.get_password = get_password
    mod.errors = errors
    monkeypatch.setitem(sys.modules, "keyring", mod)
    monkeypatch.setitem(sys.modules, "keyring.errors", errors)
    return calls


def secrets_file(tmp_path, text: str, *, mode: int = 0o600):
    p = tmp_path / "secrets.yaml"
    p.write_text(text)
    p.chmod(mode)
    return p


# -- the secret store ------------------------------------------------------------------------------


def test_env_name():
    assert SecretStore.env_name("shop_secret_key") == "SGPFAB_SECRET_SHOP_SECRET_KEY"
    assert SecretStore.env_name("db.url-prod") == "SGPFAB_SECRET_DB_URL_PROD"


def test_precedence_env_var_then_file_then_keyring(monkeypatch, tmp_path):
    calls = fake_keyring(monkeypatch, {"a": "from-keyring", "b": "from-keyring", "c": "from-keyring"})
    store = SecretStore(secrets_file(tmp_path, "a: from-file\nb: from-file\n"))
    monkeypatch.setenv("SGPFAB_SECRET_A", "from-env")
    assert store.get("a") == "from-env"
    assert store.get("b") == "from-file"
    assert store.get("c") == "from-keyring"
    assert store.get("d") is None
    assert calls == [("sgpfab", "c"), ("sgpfab", "d")], "the keyring is asked only when nothing else has it"


def test_an_empty_env_var_still_wins(monkeypatch, tmp_path):
    store = SecretStore(secrets_file(tmp_path, "a: from-file\n"))
    monkeypatch.setenv("SGPFAB_SECRET_A", "")
    assert store.get("a") == ""


def test_keyring_disabled_or_absent_or_broken(monkeypatch, tmp_path):
    calls = fake_keyring(monkeypatch, {"a": "k"})
    assert SecretStore(None, use_keyring=False).get("a") is None and calls == []
    monkeypatch.setitem(sys.modules, "keyring", None)  # not installed: import fails
    assert SecretStore(None).get("a") is None
    fake_keyring(monkeypatch, {"a": "k"}, broken=True)
    assert SecretStore(None).get("a") is None


def test_secrets_file_from_the_environment_wins_over_the_inventory(monkeypatch, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    env_file = secrets_file(other, "a: env-named-file\n")
    monkeypatch.setenv("SGPFAB_SECRETS_FILE", str(env_file))
    assert SecretStore(secrets_file(tmp_path, "a: inventory-file\n")).get("a") == "env-named-file"


def test_missing_secrets_file_is_fine(tmp_path):
    assert SecretStore(tmp_path / "nope.yaml", use_keyring=False).get("a") is None


def test_secrets_file_values_and_shape(tmp_path):
    store = SecretStore(secrets_file(tmp_path, "n: 42\nf: 1.5\ns: 'x y'\n"))
    assert (store.get("n"), store.get("f"), store.get("s")) == ("42", "1.5", "x y")
    for text in ("- a\n- b\n", "a: [1, 2]\n", "a: {b: c}\n"):
        (tmp_path / "secrets.yaml").write_text(text)
        with pytest.raises(InputError) as e:
            SecretStore(tmp_path / "secrets.yaml").get("a")
        assert "must be a YAML mapping" in str(e.value)
    (tmp_path / "secrets.yaml").write_text("a: [unclosed\n")
    with pytest.raises(InputError) as e:
        SecretStore(tmp_path / "secrets.yaml").get("a")
    assert "cannot be read" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o700 | 0o004])
def test_secrets_file_readable_by_others_is_refused(tmp_path, mode):
    p = secrets_file(tmp_path, "a: b\n", mode=mode)
    with pytest.raises(InputError) as e:
        SecretStore(p).get("a")
    assert "chmod 600" in str(e.value) and "b" not in str(e.value).split(":")[-1]


def test_secrets_file_must_belong_to_the_user(tmp_path):
    p = secrets_file(tmp_path, "a: b\n")
    if os.getuid() != 0:
        pytest.skip("needs root to give the file away")
    os.chown(p, 12345, 12345)
    with pytest.raises(InputError) as e:
        check_private(p)
    assert "belongs to another user" in str(e.value)


def test_secrets_file_must_be_a_regular_file(tmp_path):
    d = tmp_path / "dir.yaml"
    d.mkdir(mode=0o700)
    with pytest.raises(InputError) as e:
        check_private(d)
    assert "not a regular file" in str(e.value)


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_secrets_file_inside_a_git_repository_must_be_ignored(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    p = secrets_file(repo, "a: b\n")
    with pytest.raises(InputError) as e:
        check_private(p)
    assert "inside the git repository" in str(e.value)
    (repo / ".gitignore").write_text("secrets.yaml\n")
    check_private(p)
    outside = tmp_path / "outside"
    outside.mkdir()
    check_private(secrets_file(outside, "a: b\n"))


# -- resolving an instance's settings -------------------------------------------------------------


def instance(tmp_path, *, host_os="linux", **app):
    hosts = {"h1": {"user": "deploy", "os": host_os}}
    return load_inventory(tmp_path, data=inventory_data(hosts=hosts, apps={"shop": app_with(**app)})).instance(
        "shop", "h1"
    )


class DictStore(SecretStore):
    """A secret store whose values are given (environment variables cannot hold NUL)."""

    def __init__(self, values: dict):
        super().__init__(None, use_keyring=False)
        self.values = values

    def get(self, name):
        return self.values.get(name)


def store_with(monkeypatch, **values) -> SecretStore:
    return DictStore(values)


def test_builtins_linux_and_windows(tmp_path):
    assert builtins(instance(tmp_path, port=8005, bind="127.0.0.1")) == {
        "PORT": "8005",
        "HOST": "127.0.0.1",
        "DATABASE_URL": "sqlite:////srv/shop/shared/db/app.db",
    }
    assert (
        builtins(instance(tmp_path, database={"engine": "sqlite", "path": "data/x.sqlite3", "env": "DB"}))["DB"]
        == "sqlite:////srv/shop/shared/data/x.sqlite3"
    )
    assert "DATABASE_URL" not in builtins(instance(tmp_path, database={"engine": "none"}))
    assert "DATABASE_URL" not in builtins(instance(tmp_path, database={"engine": "postgresql"}))
    w = builtins(instance(tmp_path, host_os="windows"))
    assert w["DATABASE_URL"] == "sqlite:///C:/apps/shop/shared/db/app.db"


def test_placeholders(tmp_path):
    inst = instance(tmp_path, api_root="/srv/my-shop", service="shop-svc", port=8010)
    assert (
        expand("{api_root}|{shared}|{port}|{app}|{service}|{host}|{bind}|{other}|{{shared}}", inst)
        == "/srv/my-shop|/srv/my-shop/shared|8010|shop|shop-svc|h1|0.0.0.0|{other}|{/srv/my-shop/shared}"
    )


def test_resolve_env_secrets_and_files(monkeypatch, tmp_path):
    inst = instance(
        tmp_path,
        env={
            "MEDIA_ROOT": "{shared}/media",
            "PORT": "9999",
            "SECRET_KEY": {"secret": "sk"},
            "TLS_KEY": {"secret_file": "tls.key"},
            "OPTIONAL": {"secret": "nope", "required": False},
            "DATABASE_URL": "sqlite:////tmp/x.db",
        },
    )
    pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----\n"
    s = resolve(inst, store_with(monkeypatch, sk=SECRET_VALUE, **{"tls.key": pem}))
    assert s.env == {
        "PORT": "9999",
        "HOST": "0.0.0.0",
        "DATABASE_URL": "sqlite:////tmp/x.db",
        "MEDIA_ROOT": "/srv/shop/shared/media",
        "SECRET_KEY": SECRET_VALUE,
        "TLS_KEY": "/srv/shop/shared/config/files/tls.key",
    }
    assert s.files == {"tls.key": pem}
    assert s.secret_keys == ["SECRET_KEY"]
    assert s.masked() == {
        "DATABASE_URL": "sqlite:////tmp/x.db",
        "HOST": "0.0.0.0",
        "MEDIA_ROOT": "/srv/shop/shared/media",
        "PORT": "9999",
        "SECRET_KEY": MASK,
        "TLS_KEY": "/srv/shop/shared/config/files/tls.key",
    }
    assert SECRET_VALUE not in str(s.masked())
    assert s.payload() == {"env": s.env, "files": s.files, "secret_keys": ["SECRET_KEY"]}


def test_secret_values_are_not_placeholder_expanded(monkeypatch, tmp_path):
    inst = instance(tmp_path, env={"K": {"secret": "k"}})
    assert resolve(inst, store_with(monkeypatch, k="{shared}")).env["K"] == "{shared}"


def test_windows_secret_file_path(monkeypatch, tmp_path):
    inst = instance(tmp_path, host_os="windows", env={"TLS_KEY": {"secret_file": "tls.key"}})
    assert (
        resolve(inst, store_with(monkeypatch, **{"tls.key": "x"})).env["TLS_KEY"]
        == "C:\\apps\\shop\\shared\\config\\files\\tls.key"
    )


def test_missing_required_secret_is_one_line_naming_host_and_secret(tmp_path):
    inst = instance(tmp_path, env={"SECRET_KEY": {"secret": "shop_key"}})
    with pytest.raises(InputError) as e:
        resolve(inst, SecretStore(None, use_keyring=False))
    msg = str(e.value)
    assert msg.startswith("h1: secret 'shop_key' (for SECRET_KEY) is not set") and "\n" not in msg
    assert "SGPFAB_SECRET_SHOP_KEY" in msg


@pytest.mark.parametrize("bad", ["line1\nline2", "cr\rx", "nul\x00", "esc\x1b[0m", "del\x7f"])
def test_multi_line_secret_is_refused_without_showing_it(monkeypatch, tmp_path, bad):
    inst = instance(tmp_path, env={"K": {"secret": "k"}})
    value = "TOPSECRET" + bad
    with pytest.raises(InputError) as e:
        resolve(inst, store_with(monkeypatch, k=value))
    msg = str(e.value)
    assert "TOPSECRET" not in msg and "\n" not in msg and "secret_file: k" in msg and msg.startswith("h1:")


def test_multi_line_secret_is_fine_as_a_file(monkeypatch, tmp_path):
    inst = instance(tmp_path, env={"K": {"secret_file": "k"}})
    assert resolve(inst, store_with(monkeypatch, k="a\nb\x00c")).files == {"k": "a\nb\x00c"}


def test_optional_missing_secret_drops_the_variable(tmp_path):
    inst = instance(
        tmp_path, env={"K": {"secret": "k", "required": False}, "F": {"secret_file": "f", "required": False}}
    )
    s = resolve(inst, SecretStore(None, use_keyring=False))
    assert "K" not in s.env and "F" not in s.env and s.files == {} and s.secret_keys == []


GOOD_PG = "postgresql://shop:p%40ss@db.internal:5432/shop"


@pytest.mark.parametrize("url", [GOOD_PG, "postgres://u:p@h/db", "postgresql+psycopg://u:p@h:6543/db?sslmode=require"])
def test_postgres_url_accepted(monkeypatch, tmp_path, url):
    inst = instance(tmp_path, database={"engine": "postgresql"}, env={"DATABASE_URL": {"secret": "db"}})
    assert resolve(inst, store_with(monkeypatch, db=url)).env["DATABASE_URL"] == url


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@h/db",
        "postgresql://u:p@h/",
        "postgresql://u:hunter2@:5432/db",
        "postgresql://:hunter2@h/db",
        "postgresql://u:hunter2@h:99999/db",
        "postgresql://u:hunter2@h:port/db",
        "hunter2",
        "",
    ],
)
def test_postgres_url_refused_without_echoing_it(monkeypatch, tmp_path, url):
    inst = instance(tmp_path, database={"engine": "postgresql"}, env={"DATABASE_URL": {"secret": "db"}})
    if url == "":
        with pytest.raises(InputError) as e:
            resolve(inst, store_with(monkeypatch, db=url))
        assert "needs DATABASE_URL" in str(e.value)
        return
    with pytest.raises(InputError) as e:
        resolve(inst, store_with(monkeypatch, db=url))
    msg = str(e.value)
    assert "not a valid PostgreSQL URL" in msg and msg.startswith("h1: DATABASE_URL")
    assert "hunter2" not in msg and url not in msg


def test_postgres_without_a_url_says_how_to_set_one(tmp_path):
    inst = instance(tmp_path, database={"engine": "postgresql"})
    with pytest.raises(InputError) as e:
        resolve(inst, SecretStore(None, use_keyring=False))
    assert str(e.value) == (
        "h1: database engine postgresql needs DATABASE_URL in env (e.g. DATABASE_URL: {secret: shop_database_url})"
    )


def test_masked_is_sorted_and_hides_only_secret_keys():
    s = Settings(env={"B": "2", "A": "1", "S": "x"}, secret_keys=["S"])
    assert list(s.masked().items()) == [("A", "1"), ("B", "2"), ("S", MASK)]


def test_optional_missing_secret_keeps_the_builtin(tmp_path):
    inst = instance(tmp_path, env={"DATABASE_URL": {"secret": "db", "required": False}})
    s = resolve(inst, SecretStore(None, use_keyring=False))
    assert s.env["DATABASE_URL"] == "sqlite:////srv/shop/shared/db/app.db"


# -- a Windows app's run_as password ----------------------------------------------------------------


def test_run_as_password_comes_from_the_secrets_and_stays_out_of_the_settings(monkeypatch, tmp_path):
    inst = instance(tmp_path, host_os="windows", run_as="CORP\\svc", run_as_password={"secret": "svc_pw"})
    store = store_with(monkeypatch, svc_pw=SECRET_VALUE)
    assert account_password(inst, store) == SECRET_VALUE
    assert SECRET_VALUE not in repr(resolve(inst, store).payload())
    assert account_password(instance(tmp_path, host_os="windows"), store) is None


def test_a_missing_or_empty_run_as_password_is_one_line_without_the_value(monkeypatch, tmp_path):
    inst = instance(tmp_path, host_os="windows", run_as="CORP\\svc", run_as_password={"secret": "svc_pw"})
    with pytest.raises(InputError) as e:
        account_password(inst, SecretStore(None, use_keyring=False))
    msg = str(e.value)
    assert msg.startswith("h1: secret 'svc_pw' (for run_as_password) is not set") and "\n" not in msg
    assert "SGPFAB_SECRET_SVC_PW" in msg
    with pytest.raises(InputError, match="is empty"):
        account_password(inst, store_with(monkeypatch, svc_pw=""))
