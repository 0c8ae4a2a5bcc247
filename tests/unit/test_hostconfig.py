"""`sgpfab apply`'s view of the host: the instance a deploy recorded (host.json) and the
optional config file, validated like the inventory."""

import json

import pytest

from sgpfab.errors import InputError, SgpfabError
from sgpfab.hostconfig import load_config, recorded, resolve
from sgpfab.inventory import Database, HealthCheck, Host, Instance
from sgpfab.layout import Layout


def deployed(**over) -> Instance:
    data = dict(
        app="shop",
        host=Host(name="web1"),
        api_root="/opt/shop",
        service="shop-api",
        port=8123,
        bind="127.0.0.1",
        run_as="shopsvc",
        backups_keep=4,
        python="/usr/bin/python3.11",
        health=HealthCheck(path="/healthz", body="^ok$", timeout=30),
        database=Database(path="data/s.db"),
    )
    return Instance(**{**data, **over})


def record(inst: Instance, login: str = "deploy") -> dict[str, str]:
    lay = Layout.for_instance(inst)
    return {lay.host_json: lay.host_json_text(inst, login, inst.run_as or login)}


def config(tmp_path, text: str):
    p = tmp_path / "apply.yaml"
    p.write_text(text)
    return p, load_config(p)


def test_what_a_deploy_recorded_comes_back_unchanged(tmp_path):
    inst = deployed()
    p, cfg = config(tmp_path, "api_root: /opt/shop\n")
    hc = resolve("shop", None, cfg, p, record(inst).get)
    got = hc.inst
    for key in ("api_root", "service", "port", "bind", "run_as", "health", "database", "backups_keep", "python"):
        assert getattr(got, key) == getattr(inst, key), key
    assert got.host.transport_kind == "local" and hc.login_user == "deploy"
    assert hc.write_settings is False  # the settings on the host are kept
    # and writing host.json again from it gives the same file
    lay = Layout.for_instance(got)
    assert lay.host_json_text(got, "deploy", "shopsvc") == record(inst)[lay.host_json]


def test_the_default_api_root_and_no_config():
    inst = deployed(api_root="/srv/shop")
    hc = resolve("shop", None, None, None, record(inst).get)
    assert hc.inst.api_root == "/srv/shop" and hc.inst.port == 8123
    with pytest.raises(InputError, match=r"never deployed to /srv/shop .*pass --config"):
        resolve("shop", None, None, None, {}.get)


def test_the_config_file_overrides_what_was_recorded_key_by_key(tmp_path):
    p, cfg = config(tmp_path, "api_root: /opt/shop\nport: 9001\nhealth: {timeout: 90}\nenv: {A: '1'}\n")
    hc = resolve("shop", None, cfg, p, record(deployed()).get)
    assert hc.inst.port == 9001 and hc.inst.health.timeout == 90 and hc.inst.health.path == "/healthz"
    assert hc.inst.env == {"A": "1"} and hc.write_settings is True  # env given: settings written


def test_a_host_never_deployed_to_needs_only_the_config_file(tmp_path):
    p, cfg = config(
        tmp_path,
        "api_root: /srv/x\nport: 8100\nrun_as: app\ndatabase: {engine: none}\nenv: {SECRET_KEY: {secret: x_key}}\n",
    )
    hc = resolve("shop", None, cfg, p, {}.get)
    assert hc.inst.service == "shop" and hc.inst.run_as == "app" and hc.inst.database.engine == "none"
    assert hc.login_user is None and hc.write_settings is True


def test_an_inventory_app_entry_can_be_pasted_as_is(tmp_path):
    p, cfg = config(
        tmp_path,
        "source: ../shop\nport: 8001\nprocesses: {web: {server: uvicorn, app: 'shop:app'}}\n"
        "release: [alembic upgrade head]\napi_root: /srv/shop\n",
    )
    assert resolve("shop", None, cfg, p, {}.get).inst.port == 8001


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port: 99999\n", r"apply.yaml: apps.shop.port: .*65535"),
        ("api_root: /srv/../etc\n", r"api_root must be a normalised absolute path"),
        ("api_root: 'relative/path'\n", r"api_root: invalid path"),
        ("run_as: root\n", r"must not run as root"),
        ("service: 'a b'\n", r"invalid service name"),
        ("env: {'BAD KEY': x}\n", r"invalid environment variable name"),
        ("health: {path: 'no-slash'}\n", r"invalid health path"),
        ("bind: '0.0.0.0; rm -rf /'\n", r"invalid bind address"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(tmp_path, text, message):
    p, cfg = config(tmp_path, text)
    with pytest.raises(SgpfabError, match=message):
        resolve("shop", None, cfg, p, {}.get)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", r"expected a mapping"),
        ("portt: 1\n", r"unknown key 'portt'"),
        ("processes: {web: {server: nginx}}\n", r"processes.web.server"),
        ("port: [\n", r"not valid YAML"),
        ("host: 'x y'\n", r"host: invalid name"),
    ],
)
def test_malformed_config_files_are_one_line_errors(tmp_path, text, message):
    p = tmp_path / "apply.yaml"
    p.write_text(text)
    with pytest.raises(SgpfabError, match=message) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_a_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_app_names_must_agree(tmp_path):
    with pytest.raises(InputError, match="the bundle is of app shop, not blog"):
        resolve("shop", "blog", None, None, record(deployed()).get)
    p, cfg = config(tmp_path, "app: blog\n")
    with pytest.raises(InputError, match="does not match app: blog"):
        resolve("shop", "shop", cfg, p, {}.get)


def test_an_unreadable_record_is_refused():
    inst = deployed(api_root="/srv/shop")
    path = Layout.for_instance(inst).host_json
    for text in ("{", json.dumps({"format": 1}), json.dumps({"format": 2, "root": "/srv/shop"})):
        with pytest.raises(InputError, match="not a host record this sgpfab reads"):
            resolve("shop", None, None, None, {path: text}.get)
    data, login = recorded(record(inst)[path], path)
    assert login == "deploy" and data["database"] == {"engine": "sqlite", "env": "DATABASE_URL", "path": "data/s.db"}
