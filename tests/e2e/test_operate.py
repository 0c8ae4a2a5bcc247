"""Running apps day to day on real hosts: several apps in one inventory, settings and secrets,
logs, one-off commands, and every `--json` document checked against the published schema."""

import json
import re
import signal
import subprocess
import time

from support.outputs import validated


def _two_apps(slot_factory):
    """The Flask and the Django example in ONE inventory (the second slot's app joins the first's)."""
    tasks, blog = slot_factory("tasks"), slot_factory("blog")
    tasks.inv["apps"]["blog"] = blog.app_config
    tasks.configure()
    return tasks, blog


def test_several_apps_in_one_inventory_are_separate(slot_factory):
    s, blog = _two_apps(slot_factory)
    h = s.hosts[0]
    r = s.fab("-H", h, "deploy", "--version", "1.0.0", ok=False)
    assert "several apps" in r.stderr and "--app" in r.stderr
    s.fab("-H", h, "deploy", "--app", "tasks", "--version", "1.0.0")
    s.fab("-H", h, "deploy", "--app", "blog", "--version", "1.0.0")
    assert (s.dist / "tasks/releases/v1.0.0").is_dir() and (s.dist / "blog/releases/v1.0.0").is_dir(), (
        "bundles are namespaced by app: the same version of two apps never clash"
    )
    assert s.http(h, "/healthz") == (200, b"ok") and blog.http(h, "/")[0] == 200
    s.fab(
        "-H",
        h,
        "deploy",
        "--app",
        "tasks",
        "--version",
        "1.0.1",
        "--source",
        str(s.variant("v1", append={"tasks_app/views.py": "#"})),
    )
    s.fab("-H", h, "rollback", "--app", "tasks")
    history = s.fab("-H", h, "history", "--app", "blog", "--json").stdout
    records = validated(history)["hosts"][0]["records"]
    assert [r["action"] for r in records] == ["deploy"], "audit logs are per app"
    status = validated(s.fab("-H", h, "status", "--app", "blog", "--json").stdout)
    assert status["hosts"][0]["version"] == "1.0.0" and status["hosts"][0]["app"] == "blog"
    # each app has its own lock: a deploy of one never waits for the other
    s.ssh(h, f"mkdir {s.api_root}/.sgpfab/lock")
    s.fab("-H", h, "restart", "--app", "blog")
    r = s.fab("-H", h, "restart", "--app", "tasks", ok=False)
    assert "locked by" in r.stdout


def test_settings_and_secrets(tasks_slot, tmp_path):
    s = tasks_slot
    a, b = s.hosts
    key_text = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8w\n-----END PRIVATE KEY-----\n"
    secrets_file = tmp_path / "secrets.yaml"
    secrets_file.write_text(f"tls_key: |\n  {key_text.replace(chr(10), chr(10) + '  ').rstrip()}\n")
    secrets_file.chmod(0o600)
    s.inv["secrets_file"] = str(secrets_file)
    s.configure(
        env={
            "SECRET_KEY": {"secret": "tasks_secret_key"},
            "FEATURE": "on",
            "MEDIA": "{shared}/media",
            "TLS_KEY_FILE": {"secret_file": "tls_key"},
        }
    )
    s.inv["groups"]["prod"] = {"hosts": s.inv["groups"]["prod"], "apps": {"tasks": {"env": {"FEATURE": "off"}}}}
    s.configure_host(b, apps={"tasks": {"env": {"ONLY_HERE": "yes"}}})
    secret = s.env["SGPFAB_SECRET_TASKS_SECRET_KEY"]

    plan = s.fab("-H", f"{a},{b}", "plan", "--version", "1.0.0").stdout
    assert "FEATURE=on" in plan and "FEATURE=off" in plan and "ONLY_HERE=yes" in plan, "defaults < group < host"
    assert "SECRET_KEY=********" in plan and secret not in plan
    out = s.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0").stdout
    assert secret not in out
    env = s.ssh(b, f"sudo cat {s.api_root}/shared/config/env")
    assert f"SECRET_KEY='{secret}'" in env and "FEATURE='off'" in env and f"MEDIA='{s.api_root}/shared/media'" in env
    assert s.ssh(
        b, f"sudo stat -c '%a %U' {s.api_root}/shared/config/env {s.api_root}/shared/config/files/tls_key"
    ).split() == ["600", "deploy", "600", "deploy"]
    assert s.ssh(b, f"sudo cat {s.api_root}/shared/config/files/tls_key") == key_text
    shown = s.fab("-H", b, "exec", "--command", 'echo "$FEATURE $ONLY_HERE"; cat "$TLS_KEY_FILE" | head -1').stdout
    assert "off yes" in shown and "BEGIN PRIVATE KEY" in shown, "every process of the release sees them"
    where = (
        f"sudo cat /etc/systemd/system/{s.service}-*; sudo cat {s.api_root}/.sgpfab/audit.jsonl;"
        f" sudo journalctl --no-pager -o cat; ps -eo args; sudo cat {s.api_root}/releases/v1.0.0/.sgpfab/run/*"
    )
    assert secret not in s.ssh(b, where), "never in a unit, the audit log, a log or a process list"
    assert not list(s.dist.rglob("*.env")) and secret.encode() not in b"".join(
        p.read_bytes() for p in s.dist.rglob("*") if p.is_file()
    ), "never in a bundle"

    listing = validated(s.fab("-H", b, "settings", "--json").stdout)["hosts"][0]
    assert listing["env"]["SECRET_KEY"] == "********" and listing["env"]["FEATURE"] == "off"
    # Host-local settings without a deploy: applied with --restart; status tells when they differ.
    s.fab("-H", b, "settings-set", "--env", "FEATURE=maybe")
    st = validated(s.fab("-H", b, "status", "--json", ok=None).stdout)["hosts"][0]
    assert st["settings"] == "CHANGED since deploy", st
    s.fab("-H", b, "settings-set", "--env", "FEATURE=later", "--restart")
    assert "later" in s.fab("-H", b, "exec", "--command", "echo $FEATURE").stdout
    s.fab("-H", b, "settings-unset", "--name", "FEATURE", "--restart")
    assert "off" in s.fab("-H", b, "exec", "--command", "echo $FEATURE").stdout
    # A host-local override set from a secret is masked like a deployed secret, table and JSON.
    s.fab("-H", b, "settings-set", "--secret", "API_TOKEN=tasks_secret_key")
    table = s.fab("-H", b, "settings").stdout
    listing = validated(s.fab("-H", b, "settings", "--json").stdout)["hosts"][0]
    assert secret not in table and listing["overrides"]["API_TOKEN"] == "********", (table, listing)
    s.fab("-H", b, "settings-unset", "--name", "API_TOKEN")

    # A missing secret is one line before anything changes anywhere.
    before = [s.snapshot(h) for h in (a, b)]
    del s.env["SGPFAB_SECRET_TASKS_SECRET_KEY"]
    r = s.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.1", ok=False)
    assert r.stderr.startswith("error: ") and "secret 'tasks_secret_key' (for SECRET_KEY) is not set" in r.stderr
    assert [s.snapshot(h) for h in (a, b)] == before


def test_logs_and_one_off_commands(tasks_slot):
    s = tasks_slot
    a, b = s.hosts
    s.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0", "--parallel", "2")
    s.post_json(a, "/jobs", {"payload": "loggable"})
    time.sleep(2)
    out = s.fab("-H", f"{a},{b}", "logs", "--lines", "200").stdout
    assert re.search(rf"^{a} worker \| \S+ .*job \d+ done kind=reverse result='elbaggol'", out, re.M), out
    assert re.search(rf"^{b} web \| ", out, re.M) and re.search(rf"^{b} worker \| .*worker started", out, re.M)
    only = s.fab("-H", a, "logs", "--process", "worker", "--lines", "50", "--since", "10 min ago").stdout
    assert only and all(ln.startswith((f"{a} worker | ", f"{a} worker [systemd] | ")) for ln in only.splitlines()), only
    follow = s.popen("-H", a, "logs", "--process", "worker", "--follow", "--lines", "1")
    time.sleep(2)
    s.post_json(a, "/jobs", {"payload": "followed"})
    time.sleep(3)
    follow.send_signal(signal.SIGINT)
    out, err = follow.communicate(timeout=30)
    assert "result='dewollof'" in out and "Traceback" not in err

    r = validated(
        s.fab(
            "-H",
            f"{a},{b}",
            "exec",
            "--parallel",
            "2",
            "--json",
            "--command",
            "flask --app tasks_app db current 2>/dev/null | tail -1; id -un; test $(hostname) != prod1",
            ok=None,
        ).stdout
    )
    by_host = {o["host"]: o for o in r["outcomes"]}
    assert by_host[a]["status"] == "ok" and "0001 (head)" in by_host[a]["message"] and "deploy" in by_host[a]["message"]
    assert by_host[b]["status"] == "failed" and by_host[b]["message"].startswith("exit 1"), by_host
    # Interactively on a terminal (one host): a shell in the release's environment.
    p = subprocess.run(
        ["script", "-qec", f"{s.fab_path} -H {a} exec --tty --command 'tty; echo $VIRTUAL_ENV'", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env=s._env(),
        cwd=s.cwd,
    )
    assert "/dev/pts/" in p.stdout and f"{s.api_root}/releases/v1.0.0/.venv" in p.stdout, p.stdout + p.stderr
    r = s.fab("-H", f"{a},{b}", "exec", "--tty", "--command", "sh", ok=False)
    assert "one host" in r.stderr


def test_every_json_document_matches_the_schema(slot):
    a, b = slot.hosts
    docs = [
        slot.fab("-H", a, "deploy", "--version", "1.0.0", "--json").stdout,
        slot.fab("-H", f"{a},{b}", "plan", "--version", "1.0.1", "--json").stdout,
        slot.fab("-H", a, "deploy", "--version", "1.0.1", "--json").stdout,
        slot.fab("-H", f"{a},{b}", "list", "--json").stdout,
        slot.fab("-H", f"{a},{b}", "status", "--json", ok=None).stdout,
        slot.fab("-H", a, "history", "--json").stdout,
        slot.fab("-H", a, "list-backups", "--json").stdout,
        slot.fab("-H", a, "settings", "--json").stdout,
        slot.fab("-H", a, "rollback", "--json").stdout,
        slot.fab("-H", b, "rollback", "--json", ok=False).stdout,
        slot.fab("-H", "ghost", "status", "--json", ok=False).stdout,
    ]
    kinds = [validated(d)["kind"] for d in docs]
    assert kinds == [
        "rollout",
        "plan",
        "rollout",
        "releases",
        "status",
        "history",
        "backups",
        "settings",
        "rollout",
        "error",
        "error",
    ]
    status = json.loads(docs[4])
    assert status["exit_code"] == 2 and "drift" in status["drift"]
