"""The `fab` command line: every flag documented, and bad input refused with exactly one
`error:` line and exit 1 (or one JSON document with --json) BEFORE connecting anywhere: the
inventory's hosts are unresolvable names (*.invalid), so a connection attempt would show.

The many command lines run through tests/support/fab_driver.py (the real fabric entry point,
one process for all of them, cwd = the repository); a few run as real `fab` processes too.
"""

import inspect
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.outputs import validated

from sgpfab.tasks import ns

REPO = Path(__file__).resolve().parents[2]
FAB = REPO / ".venv" / "bin" / "fab"
DRIVER = REPO / "tests" / "support" / "fab_driver.py"

INVENTORY = """\
hosts:
  h1: {hostname: h1.invalid}
  h2: {hostname: h2.invalid}
groups:
  g: [h1, h2]
apps:
  a1:
    source: app
    processes: {web: {server: command, command: "python -m http.server $PORT"}}
    env: {SECRET_KEY: {secret: a1_key}}
  a2:
    source: app
    processes: {web: {server: command, command: "python -m http.server $PORT"}}
  a3:
    source: app
    hosts: [h1]
    processes: {web: {server: command, command: "python -m http.server $PORT"}}
"""


def cmd(*argv, inventory="fleet", env=None):
    return {"argv": list(argv), "inventory": inventory, "env": env or {}}


# name -> (command line, the exact error line, or a prefix of it ending with '...')
ERRORS = {
    "unknown host": (
        cmd("-H", "nope", "deploy", "--version", "1.0.0", "--app", "a2"),
        "error: -H: unknown host or group 'nope' (known: g, h1, h2)",
    ),
    "unknown host in a list": (
        cmd("-H", "h1,nope", "status", "--app", "a2"),
        "error: -H: unknown host or group 'nope' (known: g, h1, h2)",
    ),
    "no hosts": (
        cmd("deploy", "--version", "1.0.0", "--app", "a2"),
        "error: no hosts given: use -H HOST[,HOST|GROUP...]",
    ),
    "bad version": (
        cmd("-H", "h1", "deploy", "--version", "1.x", "--app", "a2"),
        "error: invalid version '1.x': expected a semantic version like 1.0.5",
    ),
    "unicode digit version": (
        cmd("-H", "h1", "deploy", "--version", "1٠.0.0", "--app", "a2"),
        "error: invalid version '1٠.0.0': expected a semantic version like 1.0.5",
    ),
    "bad rollback version": (
        cmd("-H", "h1", "rollback", "--version", "v1", "--app", "a2"),
        "error: invalid version 'v1': expected a semantic version like 1.0.5",
    ),
    "several apps": (
        cmd("-H", "h1", "deploy", "--version", "1.0.0"),
        "error: several apps in fleet.yaml: choose one with --app (a1, a2, a3)",
    ),
    "unknown app": (cmd("-H", "h1", "status", "--app", "nope"), "error: unknown app 'nope' (known: a1, a2, a3)"),
    "app not on host": (cmd("-H", "g", "status", "--app", "a3"), "error: app a3 is not deployed on h2 (apps.a3.hosts)"),
    "keep 0": (cmd("-H", "h1", "cleanup", "--keep", "0", "--app", "a2"), "error: --keep must be at least 1"),
    "keep negative": (cmd("-H", "h1", "cleanup", "--keep=-3", "--app", "a2"), "error: --keep must be at least 1"),
    "missing inventory": (
        cmd("-H", "h1", "status", inventory="/nonexistent/fleet.yaml"),
        "error: inventory not found: /nonexistent/fleet.yaml",
    ),
    "invalid yaml": (cmd("-H", "h1", "status", inventory="broken"), "error: inventory {broken} is not valid YAML: ..."),
    "old inventory format": (
        cmd("-H", "h1", "status", inventory="old"),
        "error: {old}: the inventory format changed: ...",
    ),
    "waves 0": (
        cmd("-H", "g", "deploy", "--version", "1.0.0", "--app", "a2", "--waves", "0"),
        "error: invalid --waves item '0': use host counts or percentages, e.g. 1,25%,100%",
    ),
    "waves shrinking": (
        cmd("-H", "g", "deploy", "--version", "1.0.0", "--app", "a2", "--waves", "2,1"),
        "error: --waves must not shrink: '2,1'",
    ),
    "max-fail": (
        cmd("-H", "g", "deploy", "--version", "1.0.0", "--app", "a2", "--max-fail", "101%"),
        "error: invalid --max-fail '101%': a count (2) or a percentage (10%)",
    ),
    "parallel 0": (
        cmd("-H", "g", "rollback", "--app", "a2", "--parallel", "0"),
        "error: --parallel must be at least 1",
    ),
    "soak negative": (
        cmd("-H", "g", "deploy", "--version", "1.0.0", "--app", "a2", "--soak=-1"),
        "error: --soak must not be negative",
    ),
    "missing secret": (
        cmd("-H", "g", "deploy", "--version", "1.0.0", "--app", "a1"),
        "error: h1: secret 'a1_key' (for SECRET_KEY) is not set: export SGPFAB_SECRET_A1_KEY, ...",
    ),
    "promote without --from": (
        cmd("promote", "--to", "g", "--version", "1.0.0", "--app", "a2"),
        "error: promote needs --from, --to and --version",
    ),
    "exec without command": (cmd("-H", "h1", "exec", "--app", "a2"), "error: give --command '...'"),
    "exec multi-line": (
        cmd("-H", "h1", "exec", "--app", "a2", "--command", "ls\nrm -rf /"),
        "error: --command must be a single line without control characters: 'ls\\nrm -rf /'",
    ),
    "exec tty on many hosts": (
        cmd("-H", "g", "exec", "--app", "a2", "--command", "bash", "--tty"),
        "error: --tty runs on one host: give -H with a single host",
    ),
    "settings-set without =": (
        cmd("-H", "h1", "settings-set", "--app", "a2", "--env", "NOEQUALS"),
        "error: --env takes NAME=VALUE, got 'NOEQUALS'",
    ),
    "settings-set bad name": (
        cmd("-H", "h1", "settings-set", "--app", "a2", "--env", "BAD-KEY=x"),
        "error: invalid setting name 'BAD-KEY'",
    ),
    "settings-set missing secret": (
        cmd("-H", "h1", "settings-set", "--app", "a2", "--secret", "K=nope"),
        "error: secret 'nope' is not set: export SGPFAB_SECRET_NOPE or add it to the secrets file",
    ),
    "settings-unset nothing": (
        cmd("-H", "h1", "settings-unset", "--app", "a2"),
        "error: give at least one --name NAME",
    ),
    "logs bad process": (
        cmd("-H", "h1", "logs", "--app", "a2", "--process", "Web"),
        "error: invalid process name 'Web'",
    ),
    "restore without a backup": (
        cmd("-H", "h1", "restore", "--app", "a2"),
        "error: give --backup NAME (see: fab -H HOST list-backups)",
    ),
    "bundle not built": (cmd("-H", "h1", "deploy", "--app", "a2", "--bundle", "1.0.0"), "error: no bundle at ..."),
    "bundle and source": (
        cmd("-H", "h1", "deploy", "--app", "a2", "--bundle", "/tmp", "--source", "/tmp"),
        "error: give either --bundle or --source, not both",
    ),
}

JSON_ERRORS = {
    "unknown host": cmd("-H", "nope", "deploy", "--version", "1.0.0", "--app", "a2", "--json"),
    "several apps": cmd("-H", "h1", "status", "--json"),
    "missing secret": cmd("-H", "g", "deploy", "--version", "1.0.0", "--app", "a1", "--json"),
    "bad version": cmd("-H", "h1", "rollback", "--version", "x", "--app", "a2", "--json"),
    "keep 0": cmd("-H", "h1", "cleanup", "--keep", "0", "--app", "a2", "--json"),
    "missing inventory": cmd("-H", "h1", "list", "--json", inventory="/nonexistent/fleet.yaml"),
}

BAD_NUMBERS = {  # flags whose type invoke takes from an int/float default
    "cleanup --keep abc": cmd("-H", "h1", "cleanup", "--keep", "abc", "--app", "a2"),
    "deploy --parallel abc": cmd("-H", "h1", "deploy", "--version", "1.0.0", "--app", "a2", "--parallel", "abc"),
    "deploy --soak abc": cmd("-H", "h1", "deploy", "--version", "1.0.0", "--app", "a2", "--soak", "abc"),
    "history --last abc": cmd("-H", "h1", "history", "--app", "a2", "--last", "abc"),
    "logs --lines abc": cmd("-H", "h1", "logs", "--app", "a2", "--lines", "abc"),
}


def task_names():
    return sorted(ns.task_names)


@pytest.fixture(scope="module")
def inventories(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "app").mkdir()
    (d / "fleet.yaml").write_text(INVENTORY)
    (d / "broken.yaml").write_text("hosts: [a\napps: {\n")
    (d / "old.yaml").write_text("hosts: {h1: null}\napp: {source: app, module: 'x:app'}\n")
    return d


def env_for(inventories, case) -> dict:
    inv = case["inventory"]
    path = inv if inv.startswith("/") else str(inventories / f"{inv}.yaml")
    return {
        "SGPFAB_INVENTORY": path,
        "SGPFAB_DIST": str(inventories / "dist"),
        "SGPFAB_CACHE": str(inventories / "cache"),
        "SGPFAB_SECRETS_FILE": None,
        "SGPFAB_DEBUG": None,
        "SGPFAB_SECRET_A1_KEY": None,
        "SGPFAB_SECRET_NOPE": None,
        **case["env"],
    }


@pytest.fixture(scope="module")
def results(inventories):
    """Every command line of this module, run once through the driver."""
    named = {
        **{("error", k): c for k, (c, _) in ERRORS.items()},
        **{("json", k): c for k, c in JSON_ERRORS.items()},
        **{("number", k): c for k, c in BAD_NUMBERS.items()},
        **{("help", t): cmd("-h", t) for t in task_names()},
        ("list", ""): cmd("--list"),
    }
    keys = list(named)
    cases = [{"argv": named[k]["argv"], "env": env_for(inventories, named[k])} for k in keys]
    p = subprocess.run(
        [sys.executable, str(DRIVER)], input=json.dumps(cases), capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert p.returncode == 0, p.stderr
    return dict(zip(keys, json.loads(p.stdout)))


def expected_line(template: str, inventories) -> str:
    return template.replace("{broken}", str(inventories / "broken.yaml")).replace(
        "{old}", str(inventories / "old.yaml")
    )


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_input_is_one_error_line_and_exit_1(results, inventories, name):
    r = results[("error", name)]
    want = expected_line(ERRORS[name][1], inventories)
    assert r["rc"] == 1 and r["out"] == "", r
    assert r["err"].endswith("\n") and r["err"].count("\n") == 1, r["err"]
    line = r["err"][:-1]
    if want.endswith("..."):
        assert line.startswith(want[:-3]), line
    else:
        assert line == want
    assert "connect" not in line and "Traceback" not in r["err"]


@pytest.mark.parametrize("name", sorted(JSON_ERRORS))
def test_json_errors_are_one_json_document(results, name):
    r = results[("json", name)]
    assert r["rc"] == 1 and r["err"] == "", r
    doc, end = json.JSONDecoder().raw_decode(r["out"])
    assert r["out"][end:].strip() == "", "nothing but one document"
    assert doc["schema"] == "sgpfab/1" and doc["kind"] == "error" and set(doc) == {"schema", "kind", "error"}
    assert doc["error"] and "Traceback" not in doc["error"]
    validated(r["out"])


@pytest.mark.parametrize("name", sorted(BAD_NUMBERS))
def test_bad_numbers_are_one_error_line(results, name):
    r = results[("number", name)]
    assert r["rc"] == 1 and r["err"].startswith("error:") and r["err"].count("\n") == 1, r["err"][-300:]


def test_list_names_every_task(results):
    r = results[("list", "")]
    assert r["rc"] == 0
    listed = re.findall(r"^  (\S+)", r["out"], re.MULTILINE)
    assert sorted(listed) == task_names()
    assert {
        "deploy",
        "rollback",
        "promote",
        "plan",
        "status",
        "cleanup",
        "backup",
        "restore",
        "list-backups",
        "history",
        "unlock",
        "settings",
        "settings-set",
        "settings-unset",
        "restart",
        "exec",
        "logs",
        "list",
        "bundle",
        "sandbox.up",
        "sandbox.down",
    } <= set(listed)


def flags_in_help(text: str) -> dict[str, str]:
    """--flag -> its help line(s), from the Options section of `fab -h TASK`."""
    opts = text.split("Options:", 1)[1] if "Options:" in text else ""
    out, cur = {}, None
    for line in opts.splitlines():
        m = re.match(r"\s+-\w(?: \w+)?, --(\[no-\])?([\w-]+)(=\w+)?\s*(.*)", line)
        if m:
            cur = m.group(2)
            out[cur] = (m.group(3) or "") + "|" + m.group(4)
        elif cur and line.strip():
            out[cur] += " " + line.strip()
    return out


@pytest.mark.parametrize("task", task_names())
def test_help_documents_every_flag(results, task):
    r = results[("help", task)]
    assert r["rc"] == 0, r
    t = ns[task]
    params = [p for p in inspect.signature(t.body).parameters if p != "c"]
    flags = flags_in_help(r["out"])
    expected = {p.rstrip("_").replace("_", "-") for p in params}
    assert set(flags) == expected, r["out"]
    for flag, text in flags.items():
        assert text.split("|", 1)[1].strip(), f"--{flag} has no help text"
    assert "Docstring:" in r["out"] and (t.__doc__ or t.body.__doc__ or "").strip().split("\n")[0][:40] in r["out"]


@pytest.mark.parametrize("task", ["deploy", "settings-set"])
def test_help_shows_which_flags_take_a_value(results, task):
    flags = flags_in_help(results[("help", task)]["out"])
    args = ns[task].get_arguments()
    takes_value = {a.names[0] for a in args if a.kind not in (bool, list)}
    assert all(flags[f].startswith("=") for f in takes_value), flags
    repeatable = {a.names[0] for a in args if a.kind is list}  # invoke shows no placeholder: the help says it
    assert all("NAME" in flags[f] and "repeatable" in flags[f] for f in repeatable), flags


# -- the real `fab` program, as a user runs it ------------------------------------------------------


def run_fab(args, env):
    full = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
    return subprocess.run([str(FAB), *args], capture_output=True, text=True, cwd=REPO, env=full, timeout=120)


def test_the_real_fab_program(inventories):
    plain, as_json = cmd("-H", "nope", "deploy", "--version", "1.0.0", "--app", "a2"), JSON_ERRORS["several apps"]
    with ThreadPoolExecutor(2) as pool:
        p, j = pool.map(lambda c: run_fab(c["argv"], env_for(inventories, c)), [plain, as_json])
    assert (p.returncode, p.stdout, p.stderr) == (1, "", "error: -H: unknown host or group 'nope' (known: g, h1, h2)\n")
    assert j.returncode == 1 and j.stderr == ""
    assert validated(j.stdout) == {
        "schema": "sgpfab/1",
        "kind": "error",
        "error": "several apps in fleet.yaml: choose one with --app (a1, a2, a3)",
    }
