r"""The PowerShell sgpfab generates for Windows hosts, checked three ways: every script parses
with a real PowerShell grammar (tree-sitter, Windows PowerShell 5.1 rules); every literal reads
back with PowerShell's quoting rules; every native argument reaches the program intact through
Windows PowerShell 5.1's command-line building and the C runtime's parsing (support.winargv).
"""

import base64
import json
import random

import pytest
from support import winargv
from support.psgrammar import parse_errors
from support.pslit import QUOTES, Param, Var, literals, parse_literal, tokens
from support.winhost import WindowsHost
from support.winscripts import (
    HOSTILE_PASSWORD,
    account_instance,
    account_scripts,
    all_scripts,
    instance,
    transport_scripts,
)

from sgpfab import windows
from sgpfab.appspec import AppSpec
from sgpfab.errors import InputError
from sgpfab.transport import winrm
from sgpfab.versions import Version

V = Version.parse("1.0.5")
PY = "C:\\Python311\\python.exe"
HOSTILE = [
    "plain",
    "with space",
    "it's",
    "''",
    "'; Remove-Item C:\\ -Recurse; '",
    "$(Stop-Computer)",
    "`n`r",
    "$env:USERPROFILE",
    "\u2018smart\u2019 \u201aquotes\u201b",
    'a"b"c',
    "C:\\Program Files\\My App\\",
    "@(1,2)",
    "#comment",
    "semi;colon|pipe&amp",
    "\u00e9\u00e8 \u4e2d\u6587",
    "tab\there",
    "new\nline",
    "",
]


# -- quoting ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_quoting_round_trips_hostile_strings(value):
    quoted = windows.q(value)
    assert parse_literal(quoted) == (value, len(quoted)), "the literal ends exactly where q() ends it"
    assert parse_errors(f"Write-Output {quoted}") == []


def test_quoting_round_trips_random_strings():
    rng = random.Random(7)
    alphabet = QUOTES + '"$`@(){};|&#\\ \t\nabcXYZ019\u00e9\u4e2d\u201c\u201d'
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert parse_literal(windows.q(value)) == (value, len(windows.q(value)))


def test_nul_is_refused():
    with pytest.raises(ValueError):
        windows.q("a\0b")


def test_native_arg_ok_is_exactly_what_survives_ps51():
    """native_arg_ok agrees with the emulation of 5.1 + the C runtime on random strings (the
    emulation's own rules are checked against documented cases in test_winemu.py)."""
    rng = random.Random(1995)
    alphabet = "aZ09 \t\\/:;'$`@{}()[],.=-_\"\u00e9\u4e2d\u00a0\u2003%"
    for _ in range(4000):
        arg = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        survives = arg != "" and winargv.ps51_survives([arg, "next"])
        assert windows.native_arg_ok(arg) is survives, arg
    assert not windows.native_arg_ok("--%") and not windows.native_arg_ok("")


def test_a_builder_refuses_a_native_argument_that_would_be_mangled():
    with pytest.raises(ValueError, match="would mangle"):
        windows._native("icacls.exe", "C:\\sgp api\\", "/Q")
    with pytest.raises(ValueError, match="would mangle"):
        windows._native("nssm.exe", "set", "svc", "AppParameters", '"C:\\x y\\winrun.py"')


# -- issue 1: JSON as a native argument (the old finalize) against stdin ----------------------------


def test_old_finalize_with_json_in_argv_arrives_mangled_and_stdin_arrives_intact(tmp_path):
    """The old code passed the release metadata as an argument; Windows PowerShell 5.1 drops its
    quotes (PowerShell issue #1995). The stand-in runs the real host helper with what it gets."""
    host = WindowsHost(tmp_path)
    from sgpfab.session import HOSTCTL_SOURCE

    root = host.local("C:\\api")
    (root / ".sgpfab").mkdir(parents=True)
    (root / ".sgpfab" / "hostctl.py").write_bytes(HOSTCTL_SOURCE.read_bytes())
    old = (
        "Invoke-Checked 'python.exe' @('C:\\api\\.sgpfab\\hostctl.py', '--root', 'C:\\api', 'finalize',"
        " '--name', 'v1.0.5', '--meta', '{\"version\": \"1.0.5\"}')\n"
    )
    assert parse_errors(windows.PRELUDE + old) == [], "the script itself is fine"
    out, err, code = host.powershell(windows.PRELUDE + old)
    (call,) = host.natives
    assert call.args[-1] == '{"version": "1.0.5"}'
    assert call.argv[-2:] == ["--meta", "{version: 1.0.5}"], "the quotes are gone"
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.argv[-1])
    assert code == 1, "Invoke-Checked threw: the helper refused what it got"
    # a value with a blank inside splits the argument in two
    assert winargv.ps51_native_argv(PY, ['{"reason": "not healthy"}']) == ["{reason: not", "healthy}"]
    host.natives.clear()

    # the new path: the same JSON on stdin, as 5.1 pipes it (Out-String adds CRLF; UTF-8, no BOM)
    (root / "releases" / ".partial-v1.0.5").mkdir(parents=True)
    inst = instance(tmp_path, api_root="C:\\api")
    meta = {"version": "1.0.5", "deployed_by": "J\u00fcrgen \u201cthe\u201d dev", "note": 'a "b" \\ c'}
    cmd = windows.hostctl(inst, "finalize", "--name", "v1.0.5", stdin=json.dumps(meta).encode())
    script = windows.PRELUDE + winrm.stdin_prefix(cmd.stdin) + cmd.text
    assert parse_errors(script) == []
    _out, err, code = host.powershell(script)
    assert code == 0, err
    (call,) = host.natives
    assert call.argv == call.args and call.stdin == json.dumps(meta).encode("utf-8") + b"\r\n"
    marker = json.loads((root / "releases" / "v1.0.5" / ".sgpfab-release.json").read_text(encoding="utf-8"))
    assert {k: marker[k] for k in meta} == meta, "non-ASCII and quotes survive"


def test_without_utf8_mode_python_on_windows_would_misread_the_stdin(tmp_path):
    """Why hostctl runs with -X utf8: Python on Windows reads a pipe in the ANSI code page."""
    host = WindowsHost(tmp_path)
    from sgpfab.session import HOSTCTL_SOURCE

    script = host.local("C:\\api\\.sgpfab\\hostctl.py")
    script.parent.mkdir(parents=True)
    script.write_bytes(HOSTCTL_SOURCE.read_bytes())
    (host.local("C:\\api") / "releases" / ".partial-v1.0.5").mkdir(parents=True)
    data = json.dumps({"deployed_by": "J\u00fcrgen"}, ensure_ascii=False).encode() + b"\r\n"
    _out, _err, code = host.hostctl(script, ["--root", "C:\\api", "finalize", "--name", "v1.0.5"], data, utf8=False)
    assert code == 0
    marker = json.loads((host.local("C:\\api") / "releases" / "v1.0.5" / ".sgpfab-release.json").read_text())
    assert marker["deployed_by"] == "J\u00c3\u00bcrgen", "mojibake: UTF-8 bytes read as cp1252"


# -- every generated script: grammar gate and native arguments --------------------------------------

ROOTS = ["C:\\sgp api", "D:\\Program Files\\SGP API", "C:\\apps\\shop-api.v2"]


@pytest.mark.parametrize("root", ROOTS)
def test_every_generated_script_parses_as_windows_powershell(tmp_path, root):
    inst = instance(tmp_path, api_root=root)
    scripts = {
        **all_scripts(inst),
        **transport_scripts(),
        **{name: text for name, (text, _stdin) in account_scripts(tmp_path, root).items()},
    }
    assert len(scripts) >= 28
    failures = {name: parse_errors(s) for name, s in scripts.items()}
    # as the transport sends them: PRELUDE, the $SgpfabStdin line, the script
    failures.update(
        {
            f"sent: {name}": parse_errors(windows.PRELUDE + winrm.stdin_prefix(b"x") + s)
            for name, s in scripts.items()
            if name not in ("BOOTSTRAP", "RECEIVER")
        }
    )
    assert {name: errs for name, errs in failures.items() if errs} == {}


def test_the_functions_checked_are_all_of_them(tmp_path):
    import inspect

    builders = {
        n
        for n, f in vars(windows).items()
        if inspect.isfunction(f)
        and f.__module__ == windows.__name__
        and inspect.signature(f).return_annotation == "Cmd"
    }
    covered = {name.split()[0] for name in all_scripts(instance(tmp_path))}
    assert builders == covered, "a new builder must be added to all_scripts"


def statements(script: str) -> list[list]:
    return [
        tokens(line) for line in script.splitlines() if line.strip() and not line.startswith(("$env:", "if (", "$null"))
    ]


@pytest.mark.parametrize("root", ROOTS)
def test_every_native_argument_survives_ps51(tmp_path, root):
    """Every argument of every Invoke-Checked/Invoke-Passthrough, and every value a PRELUDE
    helper hands to nssm.exe or icacls.exe, reaches the program exactly."""
    inst = instance(tmp_path, api_root=root)
    checked = 0
    named = {name: text for name, (text, _stdin) in account_scripts(tmp_path, root).items()}
    for name, script in {**all_scripts(inst), **named}.items():
        for t in statements(script):
            cmd, args = t[0], [a for a in t[1:] if not isinstance(a, (Var, Param))]
            if cmd in ("Invoke-Checked", "Invoke-Passthrough"):
                exe, argv = args[0], args[1]
            elif cmd == "Set-NssmValue":
                exe, argv = "nssm.exe", ["set", args[0], *args[1], *args[2]]
            elif cmd == "Install-AppService":
                exe, argv = "nssm.exe", ["install", *args]
            elif cmd == "Grant-Access":
                exe, argv = "icacls.exe", [args[0], "/grant", f"*{args[1]}:{args[2]}", "/Q"]
            elif cmd in ("Protect-Directory", "New-ProbeToken"):
                exe, argv = "icacls.exe", [args[0], "/inheritance:r", "/Q"]
            elif cmd == "Invoke-PythonSource":
                exe, argv = args[0], ["-X", "utf8", "C:\\Windows\\Temp\\sgpfab-x.py", *args[1]]
            else:
                continue
            assert winargv.ps51_native_argv("C:\\x\\" + exe.split("\\")[-1], argv) == argv, (name, argv)
            checked += 1
    assert checked >= 40


def test_stdin_data_is_never_on_a_command_line(tmp_path):
    inst = instance(tmp_path)
    cmd = windows.hostctl(inst, "settings", "write", stdin=b'{"env": {"SECRET": "s3cr\\u00e9t"}}')
    assert "s3cr" not in cmd.text and cmd.text.endswith("-Stdin $SgpfabStdin\n")
    assert cmd.stdin == b'{"env": {"SECRET": "s3cr\\u00e9t"}}'
    assert "-Stdin" not in windows.hostctl(inst, "state").text


# -- api_root (issue 4) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given,root",
    [
        ("C:\\sgp api\\", "C:\\sgp api"),
        ("C:\\sgp api\\\\", "C:\\sgp api"),
        ("C:\\sgp api", "C:\\sgp api"),
        ("d:\\a\\b\\", "d:\\a\\b"),
    ],
)
def test_a_trailing_backslash_in_api_root_is_dropped(tmp_path, given, root):
    inst = instance(tmp_path, api_root=given)
    assert inst.api_root == root
    assert windows.native_arg_ok(inst.api_root), "so --root ROOT reaches the host helper intact"


@pytest.mark.parametrize("given", ["C:\\", "C:\\\\", "C:", "C:\\a\\\\b", "C:\\a\\..\\b", " C:\\a"])
def test_a_drive_root_or_an_odd_api_root_is_refused(tmp_path, given):
    from sgpfab.errors import InventoryError

    with pytest.raises(InventoryError, match="api_root"):
        instance(tmp_path, api_root=given)


# -- services and accounts --------------------------------------------------------------------------


def test_service_sids_match_what_windows_reports():
    # `sc showsid TrustedInstaller` (Chris Jackson, "What is the TrustedInstaller entity you see in
    # Windows Vista?", MSDN blogs, 2008) and Anubis' pinned NT SERVICE\Anubis SID (pkg.go.dev,
    # github.com/TecharoHQ/anubis internal/servicesid), computed independently of this code
    assert windows.service_sid("TrustedInstaller") == "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
    assert windows.service_sid("Anubis") == "S-1-5-80-765274699-3418405142-632509039-2036741013-1444054785"
    assert windows.service_sid("anubis") == windows.service_sid("ANUBIS"), "the name is upper-cased first"


def test_each_process_runs_as_its_own_virtual_account_without_a_password(tmp_path):
    inst = instance(tmp_path)
    spec = AppSpec.model_validate({"processes": {"web": {"server": "command", "command": "x"}, "worker": "y"}})
    script = windows.install_processes(inst, "v1.0.5", spec, "NT SERVICE\\sgp-api").text
    assert "Set-NssmValue 'sgp-api' @('ObjectName') @('NT SERVICE\\sgp-api')" in script
    assert "Set-NssmValue 'sgp-api-worker' @('ObjectName') @('NT SERVICE\\sgp-api-worker')" in script
    for svc in ("sgp-api", "sgp-api-worker"):
        sid = windows.service_sid(svc)
        assert f"Grant-Access 'C:\\sgp api' '{sid}' '(OI)(CI)RX'" in script
        assert f"Grant-Access 'C:\\sgp api\\shared' '{sid}' '(OI)(CI)M'" in script
        assert f"Grant-Access 'C:\\sgp api\\shared\\config' '{sid}' '(OI)(CI)RX'" in script
    # only the web process reads the probe token
    assert script.count(".sgpfab\\launch.env") == 1
    assert "Disable-OtherAppServices 'sgp-api' 'C:\\sgp api\\releases\\' @('sgp-api', 'sgp-api-worker')" in script


def test_nssm_accepts_the_virtual_account_settings_without_a_password(tmp_path):
    """Every `nssm set` install_processes can issue, run against the NSSM emulation (which
    follows settings.cpp native_set_objectname: no password only for the service's own
    virtual account)."""
    from support.nssm import NSSM

    inst = instance(tmp_path)
    n = NSSM(launch=None, terminate=None)
    for process in ("web", "worker"):
        name = windows.service_name(inst, process)
        assert n.command(["install", name, "C:\\x\\python.exe"])[2] == 0
        for param, values in windows.nssm_settings(inst, "v1.0.5", process, process == "web"):
            _out, err, code = n.command(["set", name, *param, *values])
            assert code == 0, (param, err)
            assert n.command(["get", name, *param])[0] == " ".join(values) + "\n"
    # another service's virtual account, or a named account, needs a password
    assert n.command(["set", "sgp-api", "ObjectName", "NT SERVICE\\sgp-api-worker"])[2] != 0
    assert n.command(["set", "sgp-api", "ObjectName", "CORP\\svc"])[2] != 0


@pytest.mark.parametrize("user", ["LocalSystem", "Administrator", "NT AUTHORITY\\SYSTEM", "win1\\administrator"])
def test_superusers_are_refused_by_the_inventory(tmp_path, user):
    from sgpfab.errors import InventoryError

    with pytest.raises(InventoryError, match="must not run as"):
        instance(tmp_path, extra=f"    run_as: {json.dumps(user)}\n")


def test_nssm_parameters_need_no_quotes_whatever_the_root(tmp_path):
    inst = instance(tmp_path, api_root="C:\\Program Files\\SGP API")
    settings = dict(windows.nssm_settings(inst, "v1.0.5", "web", True))
    assert settings[("AppParameters",)] == ("winrun.py", "--release", "v1.0.5", "--process", "web", "--web")
    assert settings[("AppDirectory",)] == ("C:\\Program Files\\SGP API\\.sgpfab\\launch",)
    # NSSM starts '"Application" AppParameters' (service.cpp): the C runtime gives winrun.py these
    app = settings[("Application",)][0]
    cmdline = f'"{app}" ' + " ".join(settings[("AppParameters",)])
    assert winargv.commandline_to_argv(cmdline) == [app, *settings[("AppParameters",)]]


def test_stop_all_but_a_release_stops_nothing_on_windows(tmp_path):
    inst = instance(tmp_path)
    assert windows.stop_all_but(inst, "v1").text == "$null\n"
    assert windows.stop_all_but(inst, None).text == "Stop-AppServices 'sgp-api' 'C:\\sgp api\\releases\\'\n"


def test_interactive_and_follow_are_refused(tmp_path):
    inst = instance(tmp_path)
    with pytest.raises(InputError):
        windows.exec_in_release(inst, "v1", "x", "u", True)
    with pytest.raises(InputError):
        windows.logs(inst, ["web"], 10, None, True)


# -- NSSM version --------------------------------------------------------------------------------------

# Texts from NSSM's source (github.com/kirillkovalenko/nssm): messages.mc NSSM_MESSAGE_USAGE
# ("NSSM: The non-sucking service manager\r\nVersion %s %s, %s\r\n...") with NSSM_VERSION,
# NSSM_CONFIGURATION ("64-bit" / "32-bit", plus " debug") and NSSM_DATE; nssm.cpp is_version
# (2.24-101 only): _tprintf("%s %s %s %s\n", NSSM, NSSM_VERSION, NSSM_CONFIGURATION, NSSM_DATE);
# nssm.rc: VALUE "FileVersion", NSSM_VERSION; version.cmd: NSSM_VERSION is `git describe` without
# the 'v' ("2.24" on the tag, "2.24-101-g897c7ad" 101 commits later, counted in that repository).
BANNERS = [
    (
        "NSSM: The non-sucking service manager\r\nVersion 2.24 64-bit, 2014-08-31\r\nUsage: nssm <option> [<args> ...]\r\n",
        (2, 24, 0),
    ),
    ("NSSM: The non-sucking service manager\r\nVersion 2.24 32-bit debug, 2014-08-31\r\nUsage: nssm", (2, 24, 0)),
    (
        "NSSM: The non-sucking service manager\r\nVersion 2.24-101-g897c7ad 64-bit, 2017-04-26\r\nUsage: nssm",
        (2, 24, 101),
    ),
    ("NSSM 2.24-101-g897c7ad 64-bit 2017-04-26\n", (2, 24, 101)),
    ("NSSM 2.24-101-g897c7ad", (2, 24, 101)),
    ("NSSM 2.24", (2, 24, 0)),
    ("NSSM 2.23-103-g897c7ad", (2, 23, 103)),
    ("NSSM 2.25", (2, 25, 0)),
    ("NSSM ", None),
    ("", None),
    ("The term 'nssm.exe' is not recognized", None),
    ("NSSM 0.0-0-prerelease", (0, 0, 0)),
]


@pytest.mark.parametrize("text,version", BANNERS)
def test_nssm_version_parsing(text, version):
    assert windows.parse_nssm_version(text) == version


def test_only_2_24_101_and_later_pass():
    ok = lambda t: (windows.parse_nssm_version(t) or (0,)) >= windows.NSSM_MIN_VERSION
    assert ok("NSSM 2.24-101-g897c7ad") and ok("NSSM 2.24-102-gabcdef0") and ok("NSSM 2.25")
    assert not ok("NSSM 2.24") and not ok("NSSM 2.24-100-g1234567") and not ok("NSSM 2.23-103-g897c7ad")


def test_nssm_version_reads_the_file_version_without_running_nssm(tmp_path):
    text = windows.nssm_version().text
    assert text == "Get-NssmVersion\n"
    body = windows.PRELUDE.split("function Get-NssmVersion {", 1)[1].split("\n}", 1)[0]
    assert "FileVersionInfo]::GetVersionInfo" in body and "& " not in body, "nssm.exe itself is never started"
    host = WindowsHost(tmp_path, nssm_version="2.24-101-g897c7ad")
    out, _err, code = host.powershell(windows.PRELUDE + text)
    assert code == 0 and windows.parse_nssm_version(out) == (2, 24, 101)


def test_base64_file_writes_round_trip(tmp_path):
    host = WindowsHost(tmp_path)
    files = {"a/it\u2019s.txt": ("\u2019 x".encode(), 0o644), "b.bin": (bytes(range(256)), 0o644)}
    cmd = windows.write_files("C:\\d d", files)
    _out, err, code = host.powershell(windows.PRELUDE + cmd.text)
    assert code == 0, err
    assert host.local("C:\\d d\\a\\it\u2019s.txt").read_bytes() == files["a/it\u2019s.txt"][0]
    assert host.local("C:\\d d\\b.bin").read_bytes() == bytes(range(256))
    assert base64.b64decode(literals(cmd.text.splitlines()[1])[1]) == bytes(range(256))


# -- a named run_as account (issue 16) -----------------------------------------------------------------

SPEC = AppSpec.model_validate(
    {"processes": {"web": {"server": "command", "command": "x"}, "worker": "y"}, "writable": ["media"]}
)


def test_a_named_account_is_set_through_cim_with_its_password_on_stdin_only(tmp_path):
    inst = account_instance(tmp_path, "named")
    cmd = windows.install_processes(inst, "v1", SPEC, inst.run_as, password=HOSTILE_PASSWORD)
    assert cmd.stdin == HOSTILE_PASSWORD.encode("utf-8")
    for piece in (HOSTILE_PASSWORD, "p\u00e4ss", "Get-Date", base64.b64encode(cmd.stdin).decode()):
        assert piece not in cmd.text
    lines = cmd.text.splitlines()
    assert lines[0].startswith("Invoke-Checked 'C:\\Python311\\python.exe'") and lines[0].endswith(
        "'grant-logon', '--account', 'CORP-EU.X\\svc shop.v2')"
    ), "the logon right before any service changes"
    assert [ln for ln in lines if ln.startswith("Set-ServiceAccount")] == [
        "Set-ServiceAccount 'sgp-api' 'CORP-EU.X\\svc shop.v2' $SgpfabStdin",
        "Set-ServiceAccount 'sgp-api-worker' 'CORP-EU.X\\svc shop.v2' $SgpfabStdin",
    ]
    assert not any("ObjectName" in ln or "Grant-Access " in ln for ln in lines), "no nssm.exe account, no SIDs"
    grants = [ln for ln in lines if ln.startswith("Grant-AccountAccess")]
    assert len(grants) == len(set(grants)) == 5, "each right once for the one account"
    assert "Grant-AccountAccess 'C:\\sgp api\\.sgpfab\\launch.env' 'CORP-EU.X\\svc shop.v2' '(R)'" in grants


def test_a_gmsa_is_set_without_a_password(tmp_path):
    inst = account_instance(tmp_path, "gmsa")
    cmd = windows.install_processes(inst, "v1", SPEC, inst.run_as)
    assert cmd.stdin is None and "$SgpfabStdin" not in cmd.text
    assert "Set-ServiceAccount 'sgp-api' 'CORP\\shop-gmsa$'\n" in cmd.text
    with pytest.raises(ValueError, match="only given for a named run_as account"):
        windows.install_processes(inst, "v1", SPEC, inst.run_as, password="x")


def test_a_named_account_without_its_password_or_a_password_without_one_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    inst = account_instance(tmp_path / "a", "local")
    with pytest.raises(InputError, match="needs its password") as e:
        windows.install_processes(inst, "v1", SPEC, inst.run_as)
    assert "\n" not in str(e.value)
    plain = instance(tmp_path / "b")
    with pytest.raises(ValueError, match="only given") as e2:
        windows.install_processes(plain, "v1", SPEC, "NT SERVICE\\sgp-api", password=HOSTILE_PASSWORD)
    assert HOSTILE_PASSWORD not in str(e2.value)


def test_virtual_accounts_are_unchanged_without_run_as(tmp_path):
    cmd = windows.install_processes(instance(tmp_path), "v1", SPEC, "NT SERVICE\\sgp-api")
    assert cmd.stdin is None and "Set-ServiceAccount" not in cmd.text and "grant-logon" not in cmd.text
    assert "Set-NssmValue 'sgp-api' @('ObjectName') @('NT SERVICE\\sgp-api')" in cmd.text


def test_prepare_accepts_a_named_account(tmp_path):
    inst = account_instance(tmp_path, "named")
    assert "Protect-Directory" in windows.prepare(inst, "deployer", inst.run_as).text
