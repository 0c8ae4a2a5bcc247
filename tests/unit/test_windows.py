"""PowerShell generated for Windows hosts. No PowerShell runs here: the scripts are checked by
parsing their single-quoted literals with PowerShell's rules, and by their structure."""

import random

import pytest
from ps_literals import QUOTES, literals, parse_literal

from sgpfab import windows
from sgpfab.inventory import Host
from sgpfab.layout import Layout
from sgpfab.versions import Version

V = Version.parse("1.0.5")


HOSTILE = [
    "plain", "with space", "it's", "''", "'; Remove-Item C:\\ -Recurse; '", "$(Stop-Computer)", "`n`r",
    "$env:USERPROFILE", "\u2018smart\u2019 \u201aquotes\u201b", "a\"b\"c", "C:\\Program Files\\My App\\",
    "@(1,2)", "#comment", "semi;colon|pipe&amp", "\u00e9\u00e8 \u4e2d\u6587", "tab\there", "new\nline",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_quoting_round_trips_hostile_strings(value):
    quoted = windows.q(value)
    parsed, end = parse_literal(quoted)
    assert parsed == value and end == len(quoted), "the literal ends exactly where q() ends it"


def test_quoting_round_trips_random_strings():
    rng = random.Random(7)
    alphabet = QUOTES + "\"$`@(){};|&#\\ \t\nabcXYZ019\u00e9\u4e2d"
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert parse_literal(windows.q(value)) == (value, len(windows.q(value)))


def test_nul_is_refused():
    with pytest.raises(ValueError):
        windows.q("a\0b")


def host(**kw):
    base = dict(name="win1", os="windows", api_root="C:\\Program Files\\SGP API", service="sgp-api", port=8000,
                user="deployer", run_as="sgpsvc", python="C:\\Python 311\\python.exe")
    return Host.model_validate({**base, **kw})


def test_windows_layout_uses_backslashes():
    lay = Layout.for_host(host())
    assert lay.current == "C:\\Program Files\\SGP API\\releases\\current"
    assert lay.partial(V) == "C:\\Program Files\\SGP API\\releases\\.partial-v1.0.5"
    assert lay.uv.endswith("\\.sgpfab\\bin\\uv.exe")


def test_hostctl_passes_every_argument_as_one_literal():
    script = windows.hostctl(host(), "mark", "--reason", "it's $(bad)")
    assert script.startswith("Invoke-Checked 'C:\\Python 311\\python.exe' @(")
    assert literals(script) == ["C:\\Python 311\\python.exe", "C:\\Program Files\\SGP API\\.sgpfab\\hostctl.py",
                                "--root", "C:\\Program Files\\SGP API", "mark", "--reason", "it's $(bad)"]


def test_venv_build_is_offline_and_checks_exit_codes():
    script = windows.build_venv(host(), V, "C:\\tools\\uv.exe")
    assert "$env:UV_OFFLINE = '1'" in script
    assert script.count("Invoke-Checked 'C:\\tools\\uv.exe'") == 2
    assert "'.venv\\Scripts\\python.exe'" in script and "'--no-index'" in script
    assert "Set-Location -LiteralPath 'C:\\Program Files\\SGP API\\releases\\.partial-v1.0.5'" in script


def test_env_file_is_written_then_locked_down():
    script = windows.write_env(host(), V)
    values = literals(script)
    assert "DATABASE_URL=sqlite:///C:/Program Files/SGP API/shared/db/app.db" in values
    assert "API_ROOT=C:\\Program Files\\SGP API" in values
    assert "/inheritance:r" in values and "sgpsvc:(R)" in values and "*S-1-5-18:(F)" in values
    assert script.index("Set-Content") < script.index("icacls.exe")


def test_nssm_service_is_installed_once_and_every_setting_reapplied():
    script = windows.install_service(host(), "main:app")
    assert script.startswith("if (-not (Get-Service -Name 'sgp-api' -ErrorAction SilentlyContinue)) {")
    settings = dict((s[0], s[1:]) for s in windows.nssm_settings(host(), "main:app"))
    cur = "C:\\Program Files\\SGP API\\releases\\current"
    assert settings["Application"] == (cur + "\\.venv\\Scripts\\python.exe",)
    assert settings["AppParameters"] == ("-m uvicorn main:app --host 0.0.0.0 --port 8000 --no-access-log",)
    assert settings["AppDirectory"] == (cur,)
    assert settings["AppEnvironmentExtra"] == ("API_ROOT=C:\\Program Files\\SGP API", f"PYTHONPATH={cur}", "PORT=8000")
    assert settings["AppStdout"][0].endswith("\\shared\\logs\\sgp-api.out.log")
    assert settings["AppRotateFiles"] == ("1",) and settings["AppRotateOnline"] == ("1",)
    for name, values in settings.items():  # every `nssm set` is a checked call with quoted arguments
        assert f"Invoke-Checked 'nssm.exe' @('set', 'sgp-api', '{name}'" in script


def test_restart_waits_out_pending_states_and_for_running():
    script = windows.restart(host())
    assert "Wait-NotPending 'sgp-api' 60" in script
    assert "-match 'Pending$'" in script
    assert script.index("Stop-Service") < script.index("Start-Service") < script.rindex("Wait-ServiceState 'sgp-api' 'Running'")


def test_removing_current_never_recurses_into_the_release():
    script = windows.remove_link("C:\\api\\releases\\current")
    assert "[System.IO.Directory]::Delete('C:\\api\\releases\\current', $false)" in script
    assert "-Recurse" not in script


def test_migration_runs_in_the_release_with_its_env_and_exit_code():
    script = windows.migrate(host(), V, "python scripts\\migrate.py --note \"it's\"")
    assert "Set-Location -LiteralPath 'C:\\Program Files\\SGP API\\releases\\v1.0.5'" in script
    assert literals(script)[-1] == "python scripts\\migrate.py --note \"it's\""
    assert script.rstrip().endswith("if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }")


def test_every_linux_step_has_a_windows_twin():
    from sgpfab import linux
    wanted = {"prepare_dirs", "hostctl", "which_uv", "stage_dir", "build_venv", "write_env", "chown_env", "migrate",
              "install_service", "restart", "stop", "start", "service_state", "service_logs", "health_check",
              "remove_tree", "remove_link", "file_sha256", "file_exists", "list_dir", "as_user"}
    for name in wanted:
        assert callable(getattr(linux, name)) and callable(getattr(windows, name)), name
