"""The Linux builders (linux.py, systemd.py, runfiles.py): WHOLE outputs pinned as golden files,
plus the properties every output must have.

Golden files: tests/unit/golden/NAME.txt, one per case in tests/support/golden_cases.py (the apps
of GOLDEN_INVENTORY in tests/support/builders.py, built through Inventory from YAML in tmp_path).
These tests never write them. When a builder changes on purpose, regenerate and review:

    .venv/bin/python tests/support/update_golden.py          # rewrites tests/unit/golden/*.txt
    git diff tests/unit/golden                                # every changed line runs on hosts

Besides the golden comparison: systemd.line refuses line breaks and control characters, no unit
ever contains a free-form command, every service unit runs as the service user, instance names
are exactly what `systemd-escape` gives, and the generated shell really runs the commands as
written (run here with /bin/sh and stand-in systemctl / paths under tmp_path).
"""

import os
import re
import shlex
import shutil
import stat
import subprocess

import pytest
from support.builders import (
    GOLDEN_INVENTORY,
    GOLDEN_RELEASE,
    HOSTILE_ONE_LINE,
    app_with,
    golden_instance,
    inventory_data,
    load_inventory,
)
from support.golden_cases import APPS, GOLDEN_DIR, SERVICE_USER, cases, golden_path

from sgpfab import linux, runfiles, systemd
from sgpfab.appspec import AppSpec, Process, WebProcess
from sgpfab.cmd import Cmd
from sgpfab.errors import InputError
from sgpfab.layout import Layout, Units, systemd_escape
from sgpfab.versions import MAX_LENGTH, Version


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return cases(tmp_path_factory.mktemp("golden"))


def golden_names():
    return sorted(p.stem for p in GOLDEN_DIR.glob("*.txt"))


@pytest.mark.parametrize("name", golden_names())
def test_golden(rendered, name):
    assert name in rendered, f"golden file {name}.txt has no case any more: run tests/support/update_golden.py"
    expected = golden_path(name).read_text()
    assert rendered[name] == expected, f"{name} changed: review, then run tests/support/update_golden.py"


def test_every_case_has_a_golden_file(rendered):
    missing = sorted(set(rendered) - set(golden_names()))
    assert not missing, f"no golden file for {missing}: run tests/support/update_golden.py"
    assert len(rendered) >= 50


def test_renderings_do_not_depend_on_where_the_inventory_is(rendered, tmp_path):
    assert cases(tmp_path) == rendered


# -- properties of every unit --------------------------------------------------------------------


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return load_inventory(tmp_path_factory.mktemp("inv"), text=GOLDEN_INVENTORY)


def all_units(inventory):
    for a in APPS:
        inst, spec = inventory.instance(a, "prod1"), inventory.apps[a].spec
        yield a, inst, spec, systemd.units_for(inst, spec, GOLDEN_RELEASE, SERVICE_USER[a])


def free_form_commands(spec: AppSpec) -> list[str]:
    out = list(spec.release) + list(spec.build)
    for p in spec.processes.values():
        command = getattr(p, "command", None)
        if command:
            out.append(command)
    return out


def test_units_never_contain_free_form_commands(inventory):
    checked = 0
    for _, _, spec, units in all_units(inventory):
        for command in free_form_commands(spec):
            for path, text in units.items():
                assert command not in text, f"{command!r} written into {path}"
                checked += 1
    assert checked > 20


def test_every_service_unit_runs_as_the_service_user_and_no_unit_runs_as_root(inventory):
    for a, _, spec, units in all_units(inventory):
        services = {p: t for p, t in units.items() if p.endswith(".service")}
        assert len(services) == len(spec.processes)
        for path, text in services.items():
            lines = text.splitlines()
            assert [ln for ln in lines if ln.startswith("User=")] == [f"User={SERVICE_USER[a]}"], path
            assert [ln for ln in lines if ln.startswith("Group=")] == [f"Group={SERVICE_USER[a]}"], path
            assert "NoNewPrivileges=yes" in lines and "ExecStart=" in text
        for text in units.values():
            assert "User=root" not in text and text.startswith(systemd.HEADER + "\n")


def test_units_are_all_single_lines_of_printable_text(inventory):
    for _, _, _, units in all_units(inventory):
        for text in units.values():
            assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text)
            assert text.endswith("\n")


def test_socket_only_for_socket_activated_web_processes(inventory):
    have = {a: any(p.endswith(".socket") for p in units) for a, _, _, units in all_units(inventory)}
    assert have == {"shop": True, "blog": True, "legacy": True, "batch": False, "cron": False}


@pytest.mark.parametrize(
    "key, value",
    [
        ("Description", "a\nExecStartPre=/bin/rm -rf /"),
        ("User", "svc\r"),
        ("WorkingDirectory", "/srv/x\x00"),
        ("Environment", "A=\x1b[31m"),
        ("Environment", "A=\x7f"),
        ("Environment", "A=\t"),
        ("ExecStart\n", "x"),
        ("Key\x00", "x"),
    ],
)
def test_line_refuses_control_characters(key, value):
    with pytest.raises(ValueError) as e:
        systemd.line(key, value)
    assert "refusing" in str(e.value)
    if "\n" in value:
        assert "\n" not in str(e.value), "the refused value is shown escaped"


@pytest.mark.parametrize(
    "key, value, out",
    [("User", "svc", "User=svc"), ("Port", 8000, "Port=8000"), ("Description", "a b %I ü", "Description=a b %I ü")],
)
def test_line(key, value, out):
    assert systemd.line(key, value) == out


def test_process_unit_refuses_a_multi_line_user_even_past_validation(tmp_path):
    inst = golden_instance(tmp_path)
    with pytest.raises(ValueError):
        systemd.process_unit(inst, "web", "svc\nUser=root", web=True, socket=True)


# -- instance names: systemd-escape ------------------------------------------------------------------

# Outputs of `systemd-escape -- TEXT` (systemd 252).
ESCAPES = [
    ("v1.0.5", "v1.0.5"),
    ("v1.0.1-rc.1+b7", "v1.0.1\\x2drc.1\\x2bb7"),
    ("v1.0.0+build.5", "v1.0.0\\x2bbuild.5"),
    ("v2.0.0-alpha-beta", "v2.0.0\\x2dalpha\\x2dbeta"),
    (".hidden", "\\x2ehidden"),
    ("..", "\\x2e."),
    ("a.", "a."),
    ("a/b", "a-b"),
    ("/abs/path", "-abs-path"),
    ("a//b", "a--b"),
    ("a b", "a\\x20b"),
    ("a\\b", "a\\x5cb"),
    ("x:y_z.w", "x:y_z.w"),
    ("-", "\\x2d"),
    ("%I", "\\x25I"),
    ("é", "\\xc3\\xa9"),
    ("ü/ß", "\\xc3\\xbc-\\xc3\\x9f"),
    ("tab\t", "tab\\x09"),
]


@pytest.mark.parametrize("text, escaped", ESCAPES)
def test_systemd_escape_matches_known_outputs(text, escaped):
    assert systemd_escape(text) == escaped


@pytest.mark.skipif(not shutil.which("systemd-escape"), reason="systemd-escape is not installed")
@pytest.mark.parametrize("text", [t for t, _ in ESCAPES] + ["v1.0.0-" + "x-" * 20 + "y", "v9.9.9+" + "a.b-c" * 8])
def test_systemd_escape_matches_the_real_tool(text):
    real = subprocess.run(["systemd-escape", "--", text], capture_output=True, text=True, check=True).stdout
    assert systemd_escape(text) == real.rstrip("\n")


@pytest.mark.parametrize(
    "release, instance",
    [
        ("v1.0.1-rc.1+b7", "shop-api-web@v1.0.1\\x2drc.1\\x2bb7.service"),
        ("v1.0.0", "shop-api-web@v1.0.0.service"),
        ("v1.0.0+a.b", "shop-api-web@v1.0.0\\x2ba.b.service"),
    ],
)
def test_instance_names_of_hostile_but_valid_releases(tmp_path, release, instance):
    inst = golden_instance(tmp_path)
    assert linux.process_id(inst, release, "web") == instance
    assert Units("shop-api").template("web") == "shop-api-web@.service"
    assert Units("shop-api").socket == "shop-api.socket" and Units("shop-api").target == "shop-api.target"


def test_every_accepted_version_gives_a_unit_name_within_systemds_limit():
    """Versions whose escaped name would not fit are refused when parsed; the rest fit."""
    for dashes in range(0, MAX_LENGTH - 6):
        text = "1.0.0-a" + "-" * dashes
        try:
            v = Version.parse(text)
        except InputError:
            assert dashes > 20, f"an ordinary version was refused: {text}"
            continue
        name = Units("s" * 48).instance("p" * 24, v.release_name)
        assert len(name) <= 255, (text, len(name))


@pytest.mark.skipif(not shutil.which("systemd-escape"), reason="systemd-escape is not installed")
def test_real_systemd_accepts_the_instance_name_of_an_ordinary_long_version():
    v = Version.parse("1.0.0-rc.1+build.20260101.sha.5114f85")
    r = subprocess.run(
        ["systemd-escape", "--template=shop-web@.service", "--", v.release_name], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == Units("shop").instance("web", v.release_name)


# -- the shell really does what it says --------------------------------------------------------------

COMMANDS = [
    "echo plain",
    "printf '%s|' " + " ".join(shlex.quote(x) for x in HOSTILE_ONE_LINE),
    "echo \"$0\" 'it'\\''s' \\\\ ; echo $((1+2)) # a comment",
    'x="a  b"; printf "[%s]" $x "$x"',
    "echo `echo backticks` $(echo dollar-paren) ${HOME:+home-set}",
    "printf '%s\\n' \"tab\there\" '100%' '%I' '{shared}'",
    "false || echo or; true && echo and; echo semi;echo colon",
]


def sh(script: str, *, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, cwd=cwd, env=env, timeout=30)


@pytest.mark.parametrize("command", COMMANDS)
def test_hook_and_process_scripts_run_the_command_exactly(tmp_path, command):
    direct = sh(command)
    lay = Layout("/srv/x")
    scripts = {
        "hook": runfiles.hook_script(GOLDEN_RELEASE, 1, command),
        "process": runfiles.run_script(lay, GOLDEN_RELEASE, "worker", Process(command=command)),
        "web": runfiles.run_script(lay, GOLDEN_RELEASE, "web", WebProcess(server="command", command=command)),
    }
    for what, text in scripts.items():
        f = tmp_path / what
        f.write_text(text)
        f.chmod(0o755)
        r = subprocess.run([str(f)], capture_output=True, text=True, timeout=30)
        assert (r.returncode, r.stdout, r.stderr) == (direct.returncode, direct.stdout, direct.stderr), what


@pytest.mark.parametrize(
    "web",
    [
        WebProcess(server="uvicorn", app="shop.main:create_app", factory=True, workers=4, args=("--proxy-headers",)),
        WebProcess(server="uvicorn", app="shop.main:app"),
        WebProcess(server="gunicorn", app="shop:create_app()", interface="asgi", args=("--timeout=30",)),
        WebProcess(server="gunicorn", app="blog.wsgi:application", workers=2),
    ],
)
def test_web_scripts_exec_exactly_the_servers_argv(web):
    lay = Layout("/srv/shop-api.v2")
    text = runfiles.run_script(lay, GOLDEN_RELEASE, "web", web)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh"
    pythonpath = f"/srv/shop-api.v2/releases/{GOLDEN_RELEASE}:/srv/shop-api.v2/.sgpfab/launch"
    assert shlex.split(lines[2]) == ["export", f"PYTHONPATH={pythonpath}"]
    assert shlex.split(lines[3]) == ["exec", *runfiles.web_argv(lay, GOLDEN_RELEASE, web)]
    assert len(lines) == 4


def test_release_files_cover_every_process_and_hook(tmp_path):
    inst = golden_instance(tmp_path)
    spec = load_inventory(tmp_path, text=GOLDEN_INVENTORY).apps["shop"].spec
    files = runfiles.release_files(Layout.for_instance(inst), GOLDEN_RELEASE, spec)
    assert sorted(files) == ["hooks/1", "hooks/2", "run/beat", "run/web", "run/worker"]
    assert all(mode == 0o755 for _, mode in files.values())


def fake_systemctl(tmp_path, units: list[str]):
    """A `systemctl` that lists `units` (ignoring its pattern, as if every app's units matched)
    and logs the units it is asked to stop."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "units").write_text("".join(f"{u} loaded active running Some description\n" for u in units))
    log = tmp_path / "stopped"
    (bin_dir / "systemctl").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = list-units ]; then cat {shlex.quote(str(tmp_path / "units"))}; exit 0; fi\n'
        f'if [ "$1" = stop ]; then shift; for u in "$@"; do echo "$u" >> {shlex.quote(str(log))}; done; exit 0; fi\n'
        "exit 1\n"
    )
    (bin_dir / "systemctl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return env, log


UNITS_ON_HOST = [
    "shop-api-web@v1.0.0.service",
    "shop-api-worker@v1.0.0.service",
    "shop-api-web@v1.0.1\\x2drc.1\\x2bb7.service",
    "shop-api-beat@v1.0.1\\x2drc.1\\x2bb7.service",
    "shop-api-web@v1.0.1\\x2drc.1.service",  # a release whose name is a prefix of the kept one
    "shop-api-web@v1.0.1\\x2drc.1\\x2bb7x.service",  # ... and one the kept one is a prefix of
    "shop-api-extra-web@v1.0.0.service",  # another app whose service name starts the same
    "shop-api-hook-1.service",
    "shop-api.socket",
    "shop-api.target",
    "other-web@v1.0.0.service",
]


def test_stop_all_but_stops_exactly_the_other_releases_of_this_app(tmp_path):
    env, log = fake_systemctl(tmp_path, UNITS_ON_HOST)
    r = sh(linux.stop_all_but(golden_instance(tmp_path), GOLDEN_RELEASE).text, env=env)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == [
        "shop-api-web@v1.0.0.service",
        "shop-api-worker@v1.0.0.service",
        "shop-api-web@v1.0.1\\x2drc.1.service",
        "shop-api-web@v1.0.1\\x2drc.1\\x2bb7x.service",
    ]


def test_stop_all_but_none_stops_the_socket_and_every_instance(tmp_path):
    env, log = fake_systemctl(tmp_path, UNITS_ON_HOST)
    r = sh(linux.stop_all_but(golden_instance(tmp_path), None).text, env=env)
    assert r.returncode == 0, r.stderr
    assert log.read_text().split() == [
        "shop-api.socket",
        "shop-api-web@v1.0.0.service",
        "shop-api-worker@v1.0.0.service",
        "shop-api-web@v1.0.1\\x2drc.1\\x2bb7.service",
        "shop-api-beat@v1.0.1\\x2drc.1\\x2bb7.service",
        "shop-api-web@v1.0.1\\x2drc.1.service",
        "shop-api-web@v1.0.1\\x2drc.1\\x2bb7x.service",
    ]


def test_stop_all_but_a_dotted_service_name_is_not_a_regex_wildcard(tmp_path):
    env, log = fake_systemctl(tmp_path, ["legacy.app-web@v1.0.0.service", "legacyXapp-web@v1.0.0.service"])
    inv = load_inventory(tmp_path, data=inventory_data(apps={"legacy": app_with(service="legacy.app")}))
    r = sh(linux.stop_all_but(inv.instance("legacy", "h1"), "v2.0.0").text, env=env)
    assert r.returncode == 0 and log.read_text().split() == ["legacy.app-web@v1.0.0.service"]


def test_stop_all_but_with_nothing_running_stops_nothing(tmp_path):
    env, log = fake_systemctl(tmp_path, ["other-web@v1.service"])
    r = sh(linux.stop_all_but(golden_instance(tmp_path), GOLDEN_RELEASE).text, env=env)
    assert r.returncode == 0 and not log.exists()


def local_instance(tmp_path):
    """An instance whose API_ROOT is a real directory here (tmp_path/root)."""
    root = tmp_path / "root"
    inv = load_inventory(tmp_path, data=inventory_data(apps={"shop": app_with(api_root=str(root))}))
    return inv.instance("shop", "h1"), Layout(str(root))


def test_probe_token_is_made_once_private_and_random(tmp_path):
    inst, lay = local_instance(tmp_path)
    os.makedirs(lay.tools)
    old = os.umask(0)
    try:
        assert sh(linux.ensure_probe_token(inst).text).returncode == 0
    finally:
        os.umask(old)
    env = tmp_path / "root" / ".sgpfab" / "launch.env"
    first = env.read_text()
    assert re.fullmatch(r"SGPFAB_PROBE_TOKEN=[0-9a-f]{48}\n", first)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert sh(linux.ensure_probe_token(inst).text).returncode == 0
    assert env.read_text() == first, "made once"
    env.unlink()
    sh(linux.ensure_probe_token(inst).text)
    assert env.read_text() != first


def test_write_files_unpacks_every_file_with_its_mode(tmp_path):
    target = tmp_path / "it's a dir"
    files = {"a.txt": ("hello\n", 0o644), "bin/run": (b"#!/bin/sh\n", 0o755), "odd name $x": ("z", 0o600)}
    cmd = linux.write_files(str(target), files)
    r = subprocess.run(["/bin/sh", "-c", cmd.text], input=cmd.stdin, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for rel, (content, mode) in files.items():
        p = target / rel
        assert p.read_bytes() == (content.encode() if isinstance(content, str) else content)
        assert stat.S_IMODE(p.stat().st_mode) == mode


def test_sha256_many_lists_existing_files_only(tmp_path):
    a = tmp_path / "it's"
    a.write_text("x")
    r = sh(linux.sha256_many([str(a), str(tmp_path / "missing")]).text)
    assert r.returncode == 0
    assert r.stdout.split("  ", 1)[0] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert len(r.stdout.splitlines()) == 1


def test_exec_in_release_doubles_dollars_for_systemd_run(tmp_path):
    inst = golden_instance(tmp_path)
    command = "echo $HOME ${X} $$ 'it''s'"
    argv = shlex.split(linux.exec_in_release(inst, GOLDEN_RELEASE, command, "shopsvc", False).text)
    assert argv[-4:] == ["/bin/sh", "-c", command.replace("$", "$$"), "</dev/null"]
    assert argv[:6] == ["systemd-run", "--quiet", "--wait", "--collect", "--service-type=exec", "--pipe"]
    assert "User=shopsvc" in argv and "--pty" not in argv


@pytest.mark.parametrize(
    "bind, url",
    [
        ("0.0.0.0", "http://127.0.0.1:8000/health"),
        ("::", "http://127.0.0.1:8000/health"),
        ("10.1.2.3", "http://10.1.2.3:8000/health"),
        ("fd00::5", "http://[fd00::5]:8000/health"),
        ("localhost", "http://localhost:8000/health"),
    ],
)
def test_health_url(tmp_path, bind, url):
    inv = load_inventory(tmp_path, data=inventory_data(apps={"shop": app_with(bind=bind)}))
    assert linux.health_url(inv.instance("shop", "h1")) == url


def test_a_chain_gives_each_part_exactly_its_stdin_and_stops_at_the_first_failure(tmp_path):
    out = tmp_path / "out"
    parts = [
        Cmd(f"cat > {out}.1"),
        Cmd(f"cat > {out}.2", stdin=b"second\x00part\n" * 3000),
        Cmd("true"),
        Cmd(f"cat > {out}.4", stdin=b""),
        Cmd(f"cat > {out}.5", stdin=b"fifth"),
    ]
    c = linux.chain(parts, login_is_root=True)
    r = subprocess.run(["sh", "-c", c.text], input=c.stdin, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.1").read_bytes() == b"", "a part without stdin reads nothing of the others'"
    assert (tmp_path / "out.2").read_bytes() == b"second\x00part\n" * 3000
    assert (tmp_path / "out.4").read_bytes() == b"" and (tmp_path / "out.5").read_bytes() == b"fifth"
    c = linux.chain([Cmd("exit 3"), Cmd(f"touch {out}.never")], login_is_root=True)
    r = subprocess.run(["sh", "-c", c.text], input=c.stdin, capture_output=True)
    assert r.returncode == 3 and not (tmp_path / "out.never").exists()


def test_a_chain_runs_privileged_parts_through_sudo_unless_root():
    c = linux.chain([Cmd("id -u", privileged=True), Cmd("id -u")], login_is_root=False)
    assert c.text.startswith("sudo -n sh -c 'id -u' </dev/null && sh -c 'id -u' </dev/null") and not c.privileged
    assert "sudo" not in linux.chain([Cmd("id -u", privileged=True)], login_is_root=True).text
