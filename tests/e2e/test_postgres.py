"""PostgreSQL on real sandbox hosts: the FastAPI example with its database on the same host or on
another one, backed up with pg_dump before every change, restored with pg_restore, credentials
from sgpfab's secrets, never on a command line, in a log or in the audit log."""

import re
import secrets

from support.e2e import Writer

from sgpfab.sandbox import fleet as sandbox

TAGS_MIGRATION = (
    '"""tags"""\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = "0002"\n'
    'down_revision = "0001"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n'
    '    op.create_table("tag", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
    'def downgrade():\n    op.drop_table("tag")\n'
)


def use_postgres(slot, db_host: str, listen_all: bool = False) -> dict:
    """A database and role of the slot's own on `db_host`; the app's URL as a secret."""
    sandbox.enable_postgres(slot.fleet, db_host, listen_all=listen_all)
    password = "p" + secrets.token_hex(12)
    db = sandbox.create_database(slot.fleet, db_host, f"app{slot.n}", f"app{slot.n}", password)
    address = "127.0.0.1" if not listen_all else db["ip"]
    slot.env["SGPFAB_SECRET_SGP_DB_URL"] = f"postgresql+psycopg://{db['user']}:{password}@{address}:5432/{db['dbname']}"
    slot.configure(database={"engine": "postgresql"}, env={"DATABASE_URL": {"secret": "sgp_db_url"}})
    return {**db, "password": password}


def psql(slot, db_host, db, sql):
    return slot.ssh(db_host, f'sudo -u postgres psql -X -At -d {db["dbname"]} -c "{sql}"')


def tables(slot, db_host, db):
    return set(psql(slot, db_host, db, "select tablename from pg_tables where schemaname='public'").split())


def names(slot, db_host, db):
    return set(psql(slot, db_host, db, "select name from item").split())


def test_postgres_backup_migrate_rollback_and_restore(slot):
    h = slot.hosts[0]
    db = use_postgres(slot, h)
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    assert slot.post_json(h, "/items", {"name": "one"})[0] == 201
    assert tables(slot, h, db) == {"alembic_version", "item"}
    tags = slot.variant("tags", files={"migrations/versions/0002_tags.py": TAGS_MIGRATION})
    plan = slot.fab("-H", h, "plan", "--version", "1.1.0", "--source", str(tags)).stdout
    assert "1 new: 0002" in plan, plan
    slot.fab("-H", h, "deploy", "--version", "1.1.0", "--source", str(tags))
    assert tables(slot, h, db) == {"alembic_version", "item", "tag"}
    slot.post_json(h, "/items", {"name": "two"})
    dumps = slot.ssh(h, f"sudo ls {slot.api_root}/backups").split()
    assert any(d.endswith("-before-v1.1.0.dump") for d in dumps), dumps
    assert set(slot.ssh(h, f"sudo stat -c %a {slot.api_root}/backups/*.dump").split()) == {"600"}

    slot.fab("-H", h, "rollback", "--db", "restore")
    assert slot.current(h) == "v1.0.0"
    assert names(slot, h, db) == {"one"} and tables(slot, h, db) == {"alembic_version", "item"}, (
        "a full restore: the table the newer release created is gone too"
    )
    saved = sorted(
        re.findall(r"app-\d{8}T\d{12}Z-before-rollback-to-v1\.0\.0\.dump", slot.fab("-H", h, "list-backups").stdout)
    )[-1]
    slot.fab("-H", h, "restore", "--backup", saved)  # the newer data, saved before the rollback
    assert names(slot, h, db) == {"one", "two"}
    slot.fab("-H", h, "restore", "--backup", sorted(d for d in dumps if d.endswith("-before-v1.1.0.dump"))[-1])
    assert names(slot, h, db) == {"one"}

    # A failing migration switches nothing and the database stays as it was.
    bad = slot.variant(
        "bad",
        files={
            "migrations/versions/0002_tags.py": TAGS_MIGRATION.replace(
                'op.create_table("tag"', 'op.execute("select no_such_function()")\n    op.create_table("tag"'
            )
        },
    )
    r = slot.fab("-H", h, "deploy", "--version", "1.2.0", "--source", str(bad), ok=False)
    assert "release command 'alembic upgrade head' of 1.2.0 failed" in r.stdout and "no_such_function" in r.stdout
    assert slot.current(h) == "v1.0.0" and tables(slot, h, db) == {"alembic_version", "item"}

    # The password is nowhere: not in what fab printed, the audit log, the journal or a process list.
    out = slot.fab("-H", h, "history").stdout + r.stdout + r.stderr
    logs = slot.ssh(h, f"sudo journalctl --no-pager -o cat; sudo cat {slot.api_root}/.sgpfab/audit.jsonl; ps -eo args")
    assert db["password"] not in out and db["password"] not in logs


def test_no_acknowledged_write_is_lost_through_a_postgres_restore(slot):
    h = slot.hosts[1]
    db = use_postgres(slot, h)
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    slot.post_json(h, "/items", {"name": "mark"})
    name = re.search(r"app-\d{8}T\d{12}Z-mark\.dump", slot.fab("-H", h, "backup", "--label", "mark").stdout).group(0)
    with Writer(slot, h) as w:
        slot.fab("-H", h, "restore", "--backup", name)
    assert len(w.acked) > 50
    saved = sorted(re.findall(r"app-\d{8}T\d{12}Z-before-restore\.dump", slot.fab("-H", h, "list-backups").stdout))[-1]
    scratch = f"scratch{slot.n}"
    slot.ssh(
        h,
        f"sudo -u postgres createdb {scratch} && sudo cat {slot.api_root}/backups/{saved}"
        f" | sudo -u postgres pg_restore --no-owner -d {scratch}",
    )
    kept = set(slot.ssh(h, f"sudo -u postgres psql -X -At -d {scratch} -c 'select name from item'").split())
    live = names(slot, h, db)
    lost = [n for n in w.acked if n not in live and n not in kept]
    assert not lost, f"{len(lost)} acknowledged writes lost"


def test_postgres_on_another_server(slot):
    app_host, db_host = "prod1", "prod3"
    db = use_postgres(slot, db_host, listen_all=True)
    slot.fab("-H", app_host, "deploy", "--version", "1.0.0")
    slot.post_json(app_host, "/items", {"name": "remote"})
    assert names(slot, db_host, db) == {"remote"}
    out = slot.fab("-H", app_host, "backup", "--label", "remote").stdout
    name = re.search(r"app-\d{8}T\d{12}Z-remote\.dump", out).group(0)
    slot.post_json(app_host, "/items", {"name": "later"})
    slot.fab("-H", app_host, "restore", "--backup", name)
    assert names(slot, db_host, db) == {"remote"}


def test_bad_database_settings_are_one_line_errors_before_anything_changes(slot):
    h = slot.hosts[0]
    db = use_postgres(slot, h)
    good = slot.env["SGPFAB_SECRET_SGP_DB_URL"]
    before = slot.snapshot(h)
    for url, message in [
        (good.replace(":5432/", ":1/"), "cannot connect|Connection refused|connection to server"),
        (good.replace(db["password"], "wrong-password"), "password authentication failed"),
        ("postgres//nothing", "is not a valid PostgreSQL URL"),
    ]:
        slot.env["SGPFAB_SECRET_SGP_DB_URL"] = url
        r = slot.fab("-H", h, "deploy", "--version", "1.0.0", ok=False)
        assert re.search(message, r.stderr) and r.stderr.startswith("error: ") and h in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "wrong-password" not in r.stderr
        assert slot.snapshot(h) == before
    slot.env["SGPFAB_SECRET_SGP_DB_URL"] = good
    slot.ssh(h, "sudo mv /usr/bin/pg_dump /usr/bin/pg_dump.away")
    try:
        r = slot.fab("-H", h, "deploy", "--version", "1.0.0", ok=False)
        assert "pg_dump" in r.stderr and "postgresql-client" in r.stderr, r.stderr
        assert slot.snapshot(h) == before
    finally:
        slot.ssh(h, "sudo mv /usr/bin/pg_dump.away /usr/bin/pg_dump")
    del slot.env["SGPFAB_SECRET_SGP_DB_URL"]
    r = slot.fab("-H", h, "deploy", "--version", "1.0.0", ok=False)
    assert "secret 'sgp_db_url' (for DATABASE_URL) is not set" in r.stderr
    assert slot.snapshot(h) == before
