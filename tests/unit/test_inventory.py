"""The inventory: hosts, groups and apps in one YAML file; merge rules; every refusal is one
InventoryError line that names the place."""

import copy

import pytest
from support.builders import (
    CONTROL,
    app_with,
    inventory_data,
    load_inventory,
)

from sgpfab.errors import InputError, InventoryError, SgpfabError
from sgpfab.inventory import LINUX_PYTHON, Inventory, SecretRef, default_inventory_path

FLEET = """\
defaults:
  user: deploy
  python: /usr/bin/python3
hosts:
  staging1: {hostname: 10.0.0.4}
  prod1: {hostname: 10.0.0.5, ssh_port: 2222, apps: {shop: {port: 9001, env: {DEBUG: null, EXTRA: "x"}}}}
  prod2:
  win1: {os: windows, user: deployer}
groups:
  staging: [staging1]
  prod:
    hosts: [prod1, prod2]
    user: produser
    apps:
      shop:
        env: {DEBUG: "0", TIER: prod}
        health: {timeout: 120}
  eu:
    hosts: [prod2]
    user: euuser
    apps:
      shop: {env: {TIER: eu}, backups_keep: 3}
apps:
  shop:
    source: ../shop
    port: 8001
    processes:
      web: {server: gunicorn, app: "shop.main:create_app()", workers: 2}
      worker: python -m shop.worker
    release: [alembic upgrade head]
    env:
      DEBUG: "1"
      FEATURE: true
      DISABLED: false
      COUNT: 3
      SECRET_KEY: {secret: shop_secret_key}
      TLS_KEY: {secret_file: shop_tls_key, required: false}
    health: {path: /healthz, body: "ok"}
  blog:
    source: /abs/blog
    hosts: [staging, prod1]
    processes:
      web: {server: uvicorn, app: "blog.asgi:application"}
"""


@pytest.fixture
def fleet(tmp_path) -> Inventory:
    return load_inventory(tmp_path, text=FLEET)


def refused(tmp_path, data=None, *, text=None) -> str:
    """The one-line message of the InventoryError loading this inventory gives."""
    with pytest.raises(InventoryError) as e:
        load_inventory(tmp_path, text=text) if text is not None else load_inventory(tmp_path, data=data)
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


# -- hosts and groups ----------------------------------------------------------------------------


def test_hosts_merge_defaults_then_groups_in_file_order_then_the_host(fleet):
    h = fleet.hosts
    assert h["staging1"].user == "deploy" and h["staging1"].address == "10.0.0.4"
    assert h["prod1"].user == "produser" and h["prod1"].ssh_port == 2222
    assert h["prod2"].user == "euuser", "eu comes after prod in the file"
    assert h["prod2"].address == "prod2", "no hostname: the name (an ssh_config alias)"
    assert h["prod2"].groups == ("prod", "eu") and h["staging1"].groups == ("staging",)
    assert h["win1"].os == "windows" and h["win1"].user == "deployer" and h["win1"].groups == ()


def test_host_defaults(fleet, tmp_path):
    assert fleet.hosts["prod1"].interpreter == "/usr/bin/python3"
    assert fleet.hosts["prod1"].transport_kind == "ssh" and fleet.hosts["win1"].transport_kind == "winrm"
    inv = load_inventory(tmp_path, data=inventory_data(hosts={"a": None, "w": {"os": "windows"}}))
    assert inv.hosts["a"].interpreter == LINUX_PYTHON and inv.hosts["w"].interpreter == "python.exe"
    assert inv.hosts["a"].user is None


def test_groups_are_lists_or_mappings(fleet):
    assert fleet.groups == {"staging": ("staging1",), "prod": ("prod1", "prod2"), "eu": ("prod2",)}


# -- apps and instances --------------------------------------------------------------------------


def test_apps_keep_their_spec_and_source(fleet, tmp_path):
    shop = fleet.apps["shop"]
    assert shop.source == (tmp_path / "../shop").resolve()
    assert fleet.apps["blog"].source.as_posix() == "/abs/blog"
    assert list(shop.spec.processes) == ["web", "worker"] and shop.spec.release == ("alembic upgrade head",)
    assert shop.spec.web.server == "gunicorn" and shop.spec.web.app == "shop.main:create_app()"


def test_instance_settings_merge_app_then_groups_then_host(fleet):
    i = fleet.instance("shop", "prod1")
    assert i.port == 9001, "host beats app"
    assert i.health.timeout == 120 and i.health.path == "/healthz" and i.health.body == "ok", "mappings merge"
    assert "DEBUG" not in i.env, "a null removes a key the app or a group set"
    assert i.env["TIER"] == "prod" and i.env["EXTRA"] == "x"
    assert i.env["FEATURE"] == "1" and i.env["DISABLED"] == "0" and i.env["COUNT"] == "3"
    assert i.env["SECRET_KEY"] == SecretRef(secret="shop_secret_key")
    assert i.env["TLS_KEY"].is_file and not i.env["TLS_KEY"].required and i.env["TLS_KEY"].name == "shop_tls_key"

    j = fleet.instance("shop", "prod2")
    assert j.port == 8001 and j.env["DEBUG"] == "0"
    assert j.env["TIER"] == "eu" and j.backups_keep == 3, "later groups beat earlier ones"

    s = fleet.instance("shop", "staging1")
    assert s.env["DEBUG"] == "1" and "TIER" not in s.env and s.health.timeout == 60


def test_instance_defaults(fleet):
    i = fleet.instance("shop", "staging1")
    assert (i.api_root, i.service, i.bind, i.app, i.host.name) == ("/srv/shop", "shop", "0.0.0.0", "shop", "staging1")
    assert i.interpreter == "/usr/bin/python3" and i.run_as is None
    assert i.database.engine == "sqlite" and i.database.path == "db/app.db" and i.database.env == "DATABASE_URL"
    w = fleet.instance("shop", "win1")
    assert (w.api_root, w.service) == ("C:\\apps\\shop", "shop")


def test_instance_python_overrides_the_host(tmp_path):
    inv = load_inventory(tmp_path, data=inventory_data(apps={"shop": app_with(python="/opt/py/bin/python3.12")}))
    assert inv.instance("shop", "h1").interpreter == "/opt/py/bin/python3.12"


def test_env_merge_does_not_leak_between_instances(fleet):
    a, b = fleet.instance("shop", "prod1"), fleet.instance("shop", "staging1")
    assert "EXTRA" in a.env and "EXTRA" not in b.env
    assert fleet.instance("shop", "prod1").env == a.env


def test_apps_hosts_limits_where_an_app_is_deployed(fleet):
    blog = fleet.apps["blog"]
    assert [h.name for h in fleet.hosts.values() if fleet.deploys(blog, h)] == ["staging1", "prod1"]
    assert all(fleet.deploys(fleet.apps["shop"], h) for h in fleet.hosts.values())
    with pytest.raises(InputError) as e:
        fleet.instance("blog", "prod2")
    assert "not deployed on prod2" in str(e.value)


def test_apps_hosts_naming_an_unknown_host_is_refused(tmp_path):
    with pytest.raises(SgpfabError) as e:
        load_inventory(tmp_path, data=inventory_data(apps={"shop": app_with(hosts=["nope"])}))
    assert "apps.shop.hosts" in str(e.value) and "'nope'" in str(e.value) and "\n" not in str(e.value)


def test_apps_hosts_unknown_host_is_an_inventory_error(tmp_path):
    msg = refused(tmp_path, inventory_data(apps={"shop": app_with(hosts=["nope"])}))
    assert msg.startswith(str(tmp_path))


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names, expected",
    [
        ("prod1", ["prod1"]),
        ("prod", ["prod1", "prod2"]),
        ("prod2,prod", ["prod2", "prod1"]),
        ("prod,prod1,eu", ["prod1", "prod2"]),
        (" staging , prod1 ", ["staging1", "prod1"]),
        ("all", ["staging1", "prod1", "prod2", "win1"]),
        (["win1", "all"], ["win1", "staging1", "prod1", "prod2"]),
        ("prod1,,", ["prod1"]),
    ],
)
def test_resolve(fleet, names, expected):
    assert [h.name for h in fleet.resolve(names)] == expected


@pytest.mark.parametrize("names", ["", " , ", [], ["", " "]])
def test_resolve_nothing_is_refused(fleet, names):
    with pytest.raises(InputError) as e:
        fleet.resolve(names)
    assert "no hosts given" in str(e.value)


def test_resolve_unknown_names_the_known_ones(fleet):
    with pytest.raises(InputError) as e:
        fleet.resolve("prod1,prod9")
    assert str(e.value) == (
        "-H: unknown host or group 'prod9' (known: eu, prod, prod1, prod2, staging, staging1, win1)"
    )


def test_app_selection(fleet, tmp_path):
    assert fleet.app("blog").name == "blog"
    with pytest.raises(InputError) as e:
        fleet.app(None)
    assert "several apps" in str(e.value) and "--app" in str(e.value) and "shop, blog" in str(e.value)
    with pytest.raises(InputError) as e:
        fleet.app("nope")
    assert "unknown app 'nope'" in str(e.value)
    single = load_inventory(tmp_path, data=inventory_data())
    assert single.app(None).name == "shop"


def test_default_inventory_path(monkeypatch, tmp_path):
    monkeypatch.delenv("SGPFAB_INVENTORY", raising=False)
    assert default_inventory_path(tmp_path) == tmp_path / "hosts" / "fleet.yaml"
    monkeypatch.setenv("SGPFAB_INVENTORY", "/x/inv.yaml")
    assert str(default_inventory_path(tmp_path)) == "/x/inv.yaml"


# -- loading ---------------------------------------------------------------------------------------


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InventoryError) as e:
        Inventory.load(tmp_path / "nope.yaml")
    assert str(e.value) == f"inventory not found: {tmp_path / 'nope.yaml'}"
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(InventoryError) as e:
        Inventory.load(tmp_path / "dir.yaml")
    assert "cannot be read" in str(e.value) and "\n" not in str(e.value)


def test_invalid_yaml_is_one_line(tmp_path):
    msg = refused(tmp_path, text="hosts: [a, b\napps: {\n")
    assert "is not valid YAML" in msg


def test_an_empty_file_is_refused(tmp_path):
    msg = refused(tmp_path, text="")
    assert "hosts" in msg and "Field required" in msg


def test_the_old_single_app_format_gives_the_migration_hint(tmp_path):
    msg = refused(tmp_path, text="hosts: {a: null}\napp: {source: ., module: 'x:app'}\n")
    assert "the inventory format changed" in msg and "apps:" in msg and "docs/inventory.md" in msg


def test_ssh_config_and_known_hosts_must_exist(tmp_path):
    msg = refused(tmp_path, inventory_data(ssh_config="missing_ssh_config"))
    assert "ssh_config file not found" in msg
    (tmp_path / "kh").write_text("")
    inv = load_inventory(tmp_path, data=inventory_data(known_hosts="kh", secrets_file="~/secrets.yaml"))
    assert inv.known_hosts == (tmp_path / "kh").resolve() and inv.secrets_file.is_absolute()


# -- refusals: one line, naming the place ------------------------------------------------------------


def _mutate(path, value):
    """An inventory with one value replaced (path: list of keys from the top)."""
    data = copy.deepcopy(
        inventory_data(
            hosts={"h1": {"user": "deploy"}, "h2": None},
            groups={"g": {"hosts": ["h1"], "apps": {"shop": {}}}},
            apps={"shop": app_with(port=8000)},
        )
    )
    d = data
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "path, value, place",
    [
        # hosts
        (["hosts", "bad name"], None, "invalid host name 'bad name'"),
        (["hosts", "all"], None, "invalid host name 'all'"),
        (["hosts", "h1", "hostname"], "a b", "hosts.h1.hostname"),
        (["hosts", "h1", "hostname"], "h\n", "hosts.h1.hostname"),
        (["hosts", "h1", "ssh_port"], 0, "hosts.h1.ssh_port"),
        (["hosts", "h1", "user"], "de ploy\n", "hosts.h1.user"),
        (["hosts", "h1", "python"], "python3 -c evil", "hosts.h1.python"),
        (["hosts", "h1", "os"], "bsd", "hosts.h1.os"),
        (["hosts", "h1", "colour"], "red", "hosts.h1.colour"),
        # groups
        (["groups", "h1"], ["h2"], "invalid group name 'h1'"),
        (["groups", "all"], ["h2"], "invalid group name 'all'"),
        (["groups", "g", "hosts"], ["nope"], "group 'g' names unknown host(s): nope"),
        (["groups", "g", "apps", "nope"], {}, "groups.g.apps names unknown app(s): nope"),
        (["hosts", "h1", "apps"], {"nope": {}}, "hosts.h1.apps names unknown app(s): nope"),
        # apps
        (["apps", "bad/name"], app_with(), "invalid app name 'bad/name'"),
        (["apps", "shop", "processes", "web", "app"], "shop.main:app\n", "apps.shop.processes"),
        (["apps", "shop", "processes", "web", "app"], "shop.main:app; rm -rf /", "apps.shop.processes"),
        (["apps", "shop", "processes", "worker"], "python -m w\nrm -rf /", "apps.shop.processes"),
        (
            ["apps", "shop", "release"],
            ["alembic upgrade head\nrm -rf /"],
            "apps.shop.release: hook command must be a single line",
        ),
        (["apps", "shop", "build"], ["npm ci", "x\ry"], "apps.shop.build: hook command must be a single line"),
        (["apps", "shop", "env"], {"K": "v\nInjected=1"}, "apps.shop.env"),
        (["apps", "shop", "env"], {"K": "v\x00"}, "apps.shop.env"),
        (["apps", "shop", "env"], {"K": "\x1b[31m"}, "apps.shop.env"),
        (["apps", "shop", "env"], {"BAD-KEY": "v"}, "apps.shop.env"),
        (["apps", "shop", "env"], {"K": {"secret": "a", "secret_file": "b"}}, "apps.shop.env.K"),
        (["apps", "shop", "env"], {"K": "x" * 4097}, "apps.shop.env"),
        (["apps", "shop", "port"], 70000, "apps.shop.port"),
        (["apps", "shop", "bind"], "0.0.0.0 ; x", "apps.shop.bind"),
        (["apps", "shop", "service"], "shop api", "apps.shop.service"),
        (["apps", "shop", "service"], "shop@x", "apps.shop.service"),
        (["apps", "shop", "service"], "shop/x", "apps.shop.service"),
        (["apps", "shop", "service"], "-shop", "apps.shop.service"),
        (["apps", "shop", "service"], "s" * 49, "apps.shop.service"),
        (["apps", "shop", "run_as"], "a\nb", "apps.shop.run_as"),
        (["apps", "shop", "health", "path"], "health", "apps.shop.health.path"),
        (["apps", "shop", "health", "path"], "/h ealth", "apps.shop.health.path"),
        (["apps", "shop", "health", "body"], "([unclosed", "apps.shop.health.body"),
        (["apps", "shop", "health", "body"], "a\nb", "apps.shop.health.body"),
        (["apps", "shop", "health", "status"], [200, 600], "apps.shop.health.status"),
        (["apps", "shop", "health", "status"], [], "apps.shop.health.status"),
        (["apps", "shop", "health", "timeout"], 0, "apps.shop.health.timeout"),
        (["apps", "shop", "database", "path"], "../escape.db", "apps.shop.database.path"),
        (["apps", "shop", "database", "engine"], "mysql", "apps.shop.database.engine"),
        (["apps", "shop", "backups_keep"], 0, "apps.shop.backups_keep"),
        (["apps", "shop", "writable"], ["../x"], "apps.shop.writable"),
        (["apps", "shop", "typo"], 1, "apps.shop.typo"),
        (["apps", "shop", "source"], None, "apps.shop.source"),
        # instance-level (merged) values name the app and the host
        (["apps", "shop", "api_root"], "/srv/../etc", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "/srv/x/..", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "srv/shop", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "/", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "//srv", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "/srv/shop\n", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "/srv/my shop", "apps.shop on h1: api_root"),
        (["apps", "shop", "api_root"], "C:\\apps\\shop", "apps.shop on h1: api_root"),
        (["apps", "shop", "run_as"], "root", "apps.shop on h1: the service must not run as root"),
        (["hosts", "h1", "apps"], {"shop": {"env": {"K": "a\nb"}}}, "apps.shop on h1.env: env K must be a single line"),
        (["hosts", "h1", "apps"], {"shop": {"run_as": "root"}}, "apps.shop on h1: the service must not run as root"),
        (["hosts", "h1", "apps"], {"shop": {"api_root": "/srv/a/../b"}}, "apps.shop on h1: api_root"),
        (
            ["hosts", "h1", "apps"],
            {"shop": {"processes": {"web": {"app": "a:b"}}}},
            "apps.shop on h1.processes: Extra inputs",
        ),
        (["hosts", "h1", "apps"], {"shop": {"hosts": ["h1"]}}, "apps.shop on h1.hosts: Extra inputs"),
        (["groups", "g", "apps", "shop"], {"port": "http"}, "apps.shop on h1.port"),
        # top level
        (["appz"], {}, "appz"),
    ],
)
def test_refusals_are_one_line_and_name_the_place(tmp_path, path, value, place):
    msg = refused(tmp_path, _mutate(path, value))
    assert place in msg, msg
    assert msg.startswith(str(tmp_path / "fleet.yaml")), msg


@pytest.mark.parametrize("bad", CONTROL)
def test_control_characters_in_any_env_value_are_refused(tmp_path, bad):
    msg = refused(tmp_path, _mutate(["hosts", "h1", "apps"], {"shop": {"env": {"K": f"pre{bad}post"}}}))
    assert "single line" in msg


def test_refusal_messages_do_not_echo_long_values(tmp_path):
    msg = refused(tmp_path, _mutate(["apps", "shop", "env"], {"K": "secret-ish\n" + "x" * 5000}))
    assert len(msg) < 400


@pytest.mark.parametrize(
    "run_as", ["Administrator", "administrator", ".\\Administrator", "WIN1\\Administrator", "SYSTEM", "LocalSystem"]
)
def test_windows_superusers_are_refused(tmp_path, run_as):
    data = inventory_data(hosts={"w": {"os": "windows"}}, apps={"shop": app_with(run_as=run_as)})
    msg = refused(tmp_path, data)
    assert "must not run as" in msg and "apps.shop on w" in msg


@pytest.mark.parametrize(
    "run_as", ["NT AUTHORITY\\SYSTEM", "NT AUTHORITY\\LocalService", "nt authority\\networkservice"]
)
def test_windows_builtin_accounts_are_refused(tmp_path, run_as):
    data = inventory_data(hosts={"w": {"os": "windows"}}, apps={"shop": app_with(run_as=run_as)})
    assert "run_as" in refused(tmp_path, data)


def _windows_app(**app):
    return inventory_data(hosts={"w": {"os": "windows"}}, apps={"shop": app_with(**app)})


@pytest.mark.parametrize("run_as", ["CORP\\svc-shop", ".\\svc shop", "CORP-EU.X\\svc.shop_1"])
def test_windows_named_accounts_with_a_password_secret_are_accepted(tmp_path, run_as):
    data = _windows_app(run_as=run_as, run_as_password={"secret": "shop_svc_password"})
    i = load_inventory(tmp_path, data=data).instance("shop", "w")
    assert i.run_as == run_as and i.run_as_password.name == "shop_svc_password"


def test_a_windows_gmsa_takes_no_password(tmp_path):
    i = load_inventory(tmp_path, data=_windows_app(run_as="CORP\\shop-gmsa$")).instance("shop", "w")
    assert i.run_as == "CORP\\shop-gmsa$" and i.run_as_password is None
    msg = refused(tmp_path, _windows_app(run_as="CORP\\shop-gmsa$", run_as_password={"secret": "pw"}))
    assert "apps.shop on w" in msg and "group managed service account" in msg and "no run_as_password" in msg


def test_a_windows_named_account_without_its_password_is_refused(tmp_path):
    msg = refused(tmp_path, _windows_app(run_as="CORP\\svc-shop"))
    assert "apps.shop on w" in msg and "needs run_as_password: {secret: NAME}" in msg


@pytest.mark.parametrize(
    "password, says",
    [
        ({"secret_file": "pw"}, "run_as_password must be {secret: NAME}"),
        ({"secret": "pw", "required": False}, "run_as_password must be {secret: NAME}"),
        ("plain-text-password", "run_as_password"),
        ({"secret": "bad name!"}, "secret name"),
    ],
)
def test_run_as_password_must_be_a_required_secret(tmp_path, password, says):
    msg = refused(tmp_path, _windows_app(run_as="CORP\\svc", run_as_password=password))
    assert says in msg and "plain-text-password" not in msg


def test_run_as_password_without_run_as_or_on_linux_is_refused(tmp_path):
    assert "run_as is not" in refused(tmp_path, _windows_app(run_as_password={"secret": "pw"}))
    msg = refused(tmp_path, inventory_data(apps={"shop": app_with(run_as="shopsvc", run_as_password={"secret": "pw"})}))
    assert "run_as_password is for Windows hosts only" in msg


@pytest.mark.parametrize(
    "run_as",
    ["svc-shop", "CORP\\", "CORP\\svc$x", "CORP\\svc\\x", "CORP\\'svc'", "CORP\\svc ", "TOO-LONG-DOMAIN-NAME\\svc"],
)
def test_windows_run_as_must_be_a_qualified_account(tmp_path, run_as):
    refused(tmp_path, _windows_app(run_as=run_as, run_as_password={"secret": "pw"}))


@pytest.mark.parametrize(
    "run_as",
    [
        "NT SERVICE\\shop",
        "BUILTIN\\Administrators",
        "CORP\\Domain Admins",
        "NT AUTHORITY\\Local Service",
        "LocalService",
        ".\\NetworkService",
    ],
)
def test_windows_builtin_and_admin_groups_are_refused(tmp_path, run_as):
    assert "must not run as" in refused(tmp_path, _windows_app(run_as=run_as, run_as_password={"secret": "pw"}))


@pytest.mark.parametrize(
    "root, normalised",
    [
        ("C:\\apps\\shop\\", "C:\\apps\\shop"),
        ("C:\\apps\\shop\\\\", "C:\\apps\\shop"),
        ("D:\\Program Files\\shop", "D:\\Program Files\\shop"),
    ],
)
def test_windows_api_root_trailing_backslashes_are_normalised(tmp_path, root, normalised):
    data = inventory_data(hosts={"w": {"os": "windows"}}, apps={"shop": app_with(api_root=root)})
    assert load_inventory(tmp_path, data=data).instance("shop", "w").api_root == normalised


@pytest.mark.parametrize(
    "root", ["C:\\apps\\..\\Windows", "C:apps", "\\\\server\\share", "C:\\apps\\sh;op", "/srv/shop", "C:\\apps\\shop\n"]
)
def test_bad_windows_api_roots(tmp_path, root):
    data = inventory_data(hosts={"w": {"os": "windows"}}, apps={"shop": app_with(api_root=root)})
    assert "apps.shop on w: api_root" in refused(tmp_path, data)


@pytest.mark.parametrize("root", ["/srv/shop-api.v2", "/srv/shop_1/x", "/opt/a.b-c"])
def test_linux_api_roots_with_dots_and_dashes(tmp_path, root):
    inv = load_inventory(tmp_path, data=inventory_data(apps={"shop": app_with(api_root=root)}))
    assert inv.instance("shop", "h1").api_root == root


# -- bugs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("root", ["/.", "/./", "/srv/.", "/srv/./shop"])
def test_api_root_dot_components_are_refused(tmp_path, root):
    refused(tmp_path, inventory_data(apps={"shop": app_with(api_root=root)}))


def test_windows_drive_root_is_refused(tmp_path):
    data = inventory_data(hosts={"w": {"os": "windows"}}, apps={"shop": app_with(api_root="C:\\")})
    refused(tmp_path, data)


@pytest.mark.parametrize("user", ["Deploy User", "DOM\\svc", "svc."])
def test_linux_run_as_must_be_a_posix_user(tmp_path, user):
    refused(tmp_path, inventory_data(apps={"shop": app_with(run_as=user)}))


def test_env_values_that_are_lists_are_refused(tmp_path):
    refused(tmp_path, inventory_data(apps={"shop": app_with(env={"K": ["a", "b"]})}))


def test_bad_secret_reference_says_what_is_wrong(tmp_path):
    msg = refused(tmp_path, inventory_data(apps={"shop": app_with(env={"K": {"secret": "bad name!"}})}))
    assert "secret name" in msg


def test_bad_group_settings_name_the_group(tmp_path):
    msg = refused(tmp_path, _mutate(["groups", "g", "ssh_port"], 0))
    assert "groups.g" in msg


def test_bad_process_values_name_the_process(tmp_path):
    msg = refused(tmp_path, _mutate(["apps", "shop", "processes", "web", "app"], "a:b\n"))
    assert "processes.web.app" in msg


@pytest.mark.parametrize(
    "text, place",
    [
        ("hosts: [h1, h2]\napps: {}\n", "hosts"),
        ("hosts: {h1: [x]}\napps: {}\n", "hosts.h1"),
        ("hosts: {h1: null}\ngroups: {g: h1}\napps: {}\n", "groups.g"),
        ("hosts: {h1: null}\napps: []\n", "apps"),
        ("- just\n- a list\n", "Input should be a valid dictionary"),
    ],
)
def test_wrong_shapes_are_one_line_errors(tmp_path, text, place):
    assert place in refused(tmp_path, text=text)


def test_an_inventory_without_apps_says_so(tmp_path):
    inv = load_inventory(tmp_path, text="hosts: {h1: null}\napps: {}\n")
    assert inv.apps == {}
    with pytest.raises(InputError) as e:
        inv.app(None)
    assert "several" not in str(e.value)


def test_env_keys_that_yaml_reads_as_booleans_are_refused(tmp_path):
    refused(
        tmp_path,
        text="hosts: {h1: null}\napps:\n  shop:\n    source: app\n    processes: {web: {app: 'a:b'}}\n"
        "    env: {OFF: x}\n",
    )
