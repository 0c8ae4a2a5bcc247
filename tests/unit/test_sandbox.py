"""The sandbox fleet's pure parts: where the base image is cached, inotify limits, host names,
argument checks, subnet clashes and the PostgreSQL helper text. Nothing here needs root or boots."""

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from sgpfab.sandbox import fleet, rootfs

# --- where the base image lives ------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "/var/cache/sgpfab"),
        ({"SGPFAB_SANDBOX_CACHE": "/srv/sbx"}, "/srv/sbx"),
        ({"SGPFAB_CACHE": "/home/u/.cache/sgpfab"}, "/home/u/.cache/sgpfab/sandbox"),
        ({"SGPFAB_CACHE": "/c", "SGPFAB_SANDBOX_CACHE": "/srv/sbx"}, "/c/sandbox"),  # the controller cache wins
        ({"SGPFAB_CACHE": "", "SGPFAB_SANDBOX_CACHE": "/srv/sbx"}, "/srv/sbx"),  # empty means unset
        ({"SGPFAB_CACHE": "", "SGPFAB_SANDBOX_CACHE": ""}, "/var/cache/sgpfab"),
    ],
)
def test_cache_dir_from_env(env, expected):
    assert rootfs.cache_dir(env) == Path(expected)


def test_base_path_is_named_after_the_recipe_revision():
    assert rootfs.base_path({"SGPFAB_CACHE": "/c"}) == Path(f"/c/sandbox/rootfs-{rootfs.ROOTFS_REVISION}")


def test_cache_dir_reads_the_environment_at_call_time_not_import_time(monkeypatch):
    monkeypatch.delenv("SGPFAB_CACHE", raising=False)
    monkeypatch.delenv("SGPFAB_SANDBOX_CACHE", raising=False)
    assert rootfs.cache_dir() == Path("/var/cache/sgpfab")
    monkeypatch.setenv("SGPFAB_CACHE", "/tmp/ctl")
    assert rootfs.base_path() == Path(f"/tmp/ctl/sandbox/rootfs-{rootfs.ROOTFS_REVISION}")
    monkeypatch.setenv("SGPFAB_CACHE", "/tmp/other")
    assert rootfs.cache_dir() == Path("/tmp/other/sandbox")


def test_fleets_dir_from_env():
    assert fleet.fleets_dir({}) == Path("/var/lib/sgpfab/sandbox")
    assert fleet.fleets_dir({"SGPFAB_SANDBOX_DIR": "/x"}) == Path("/x")


def test_a_complete_image_is_used_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path))
    base = rootfs.base_path()
    base.mkdir(parents=True)
    (base / rootfs.MARKER).write_text(rootfs.ROOTFS_REVISION)
    monkeypatch.setattr(rootfs, "_build", lambda *a: pytest.fail("must not build"))
    assert rootfs.ensure_base(log=lambda *a: None) == base


def test_an_image_without_its_marker_is_rebuilt_under_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SGPFAB_CACHE", str(tmp_path))
    base = rootfs.base_path()
    base.mkdir(parents=True)  # e.g. left by an older, interrupted build
    built = []

    def fake_build(b, log):
        assert (b.parent / f"{b.name}.lock").exists()
        built.append(b)
        b.mkdir(exist_ok=True)
        (b / rootfs.MARKER).write_text("x")

    monkeypatch.setattr(rootfs, "_build", fake_build)
    assert rootfs.ensure_base(log=lambda *a: None) == base
    assert built == [base]


def test_the_recipe_has_postgres_and_logrotate_and_keeps_postgres_off():
    assert {"postgresql", "logrotate"} <= set(rootfs.PACKAGES)
    assert "postgresql.service" in rootfs.DISABLED_UNITS
    assert rootfs.ROOTFS_REVISION != "bookworm-1"


def test_modules_do_not_read_the_cache_environment_at_import():
    for mod in (rootfs, fleet):
        src = Path(mod.__file__).read_text()
        assert "os.environ.get(" not in src and "os.getenv(" not in src


# --- inotify ---------------------------------------------------------------------------------------


def test_inotify_defaults_are_raised_for_32_hosts():
    got = fleet.inotify_targets({"max_user_instances": 128, "max_user_watches": 8192}, 32)
    assert got["max_user_instances"] >= 32 * 8 + 128  # ~7 per booted host, measured
    assert got["max_user_watches"] > 8192


def test_inotify_values_already_high_enough_are_left_alone():
    assert fleet.inotify_targets({"max_user_instances": 8192, "max_user_watches": 10**6}, 32) == {}


def test_inotify_is_never_lowered_and_only_the_low_one_changes():
    got = fleet.inotify_targets({"max_user_instances": 100, "max_user_watches": 10**6}, 1)
    assert set(got) == {"max_user_instances"} and got["max_user_instances"] > 100


def test_inotify_need_grows_with_the_hosts_of_all_fleets():
    cur = {"max_user_instances": 0, "max_user_watches": 0}
    small, big = fleet.inotify_targets(cur, 4), fleet.inotify_targets(cur, 64)
    assert big["max_user_instances"] > small["max_user_instances"] >= 1024
    assert big["max_user_watches"] > small["max_user_watches"]


def test_debian_default_watches_suffice_for_a_full_fleet():
    # 32 hosts do not need more than the common default of max_user_watches (~190k here)
    assert "max_user_watches" not in fleet.inotify_targets({"max_user_instances": 128, "max_user_watches": 192536}, 32)


# --- names and arguments ---------------------------------------------------------------------------


def test_host_names():
    assert fleet.host_names(1) == ["staging1"]
    assert fleet.host_names(4) == ["staging1", "prod1", "prod2", "prod3"]
    assert len(set(fleet.host_names(32))) == 32 and fleet.host_names(32)[-1] == "prod31"


@pytest.mark.parametrize(
    "name, count, subnet",
    [
        ("bad-name", 2, 240),
        ("", 2, 240),
        ("toolongname", 2, 240),
        ("ok", 0, 240),
        ("ok", 33, 240),
        ("ok", 2, 256),
        ("ok", 2, -1),
        ("sbx/..", 2, 240),
    ],
)
def test_bad_up_arguments_fail_before_anything_happens(name, count, subnet):
    with pytest.raises(ValueError):
        fleet.up(name, count, subnet)


def test_32_hosts_are_allowed():
    fleet.check_args("sbx1", 32, 240)


def test_subnet_held_by_another_fleet_or_interface():
    assert fleet.subnet_holder(240, "a", {"b": 240}, []) == "sandbox fleet 'b'"
    assert fleet.subnet_holder(240, "a", {"a": 240, "b": 241}, []) is None  # its own old state
    assert "eth9" in fleet.subnet_holder(240, "a", {}, ["eth9 169.254.240.7/24"])
    assert fleet.subnet_holder(240, "a", {}, ["sgpb-a 169.254.240.1/24", "lo 127.0.0.1/8"]) is None
    assert fleet.subnet_holder(24, "a", {}, ["eth0 169.254.240.1/24"]) is None  # 24 is not 240


# --- PostgreSQL helpers ----------------------------------------------------------------------------


def test_scram_verifier_matches_the_rfc_5802_derivation():
    salt = b"0123456789abcdef"
    v = fleet.scram_sha256("pencil", salt=salt, iterations=4096)
    head, keys = v.split("$", 1)[1].split("$")
    assert head == f"4096:{base64.b64encode(salt).decode()}"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    assert keys == f"{base64.b64encode(stored).decode()}:{base64.b64encode(server).decode()}"


def test_create_database_sql_keeps_an_ascii_password_out_of_the_sql():
    sql = fleet.create_database_sql("appdb", "app", "s3cr:et'pw")
    assert "s3cr" not in sql and "SCRAM-SHA-256$4096:" in sql
    assert '"appdb"' in sql and '"app"' in sql and "\\gexec" in sql and "ON_ERROR_STOP" in sql


def test_create_database_sql_quotes_a_non_ascii_password():
    sql = fleet.create_database_sql("appdb", "user", "pä'ss")
    assert "PASSWORD 'pä''ss';" in sql


@pytest.mark.parametrize("db, user", [("App", "app"), ("a;drop", "app"), ("appdb", 'x"y'), ("appdb", "")])
def test_create_database_sql_refuses_odd_names(db, user):
    with pytest.raises(ValueError):
        fleet.create_database_sql(db, user, "pw")


def test_pgpass_line_escapes_colons_and_backslashes():
    db = {"port": 5432, "dbname": "appdb", "user": "app"}
    assert fleet.pgpass_line(db, "a:b\\c") == "*:5432:appdb:app:a\\:b\\\\c\n"
    with pytest.raises(ValueError):
        fleet.pgpass_line(db, "two\nlines")


def test_postgres_script_listen_all_opens_the_fleet_subnet_only_then():
    on = fleet.postgres_script("169.254.240.11", "169.254.240.0/24", True)
    off = fleet.postgres_script("169.254.240.11", "169.254.240.0/24", False)
    assert "localhost,169.254.240.11" in on and ">> /etc/postgresql/15/main/pg_hba.conf" in on
    assert "169.254.240.11'" not in off and "sed -i" in off
    for script in (on, off):
        assert "systemctl enable -q postgresql.service" in script and "pg_isready" in script
