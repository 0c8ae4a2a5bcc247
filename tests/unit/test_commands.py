"""The Linux command builders: every value quoted, the right things in the right places."""

import shlex

import pytest

from sgpfab import linux
from sgpfab.inventory import Host
from sgpfab.systemd import socket_text, unit_text, units
from sgpfab.versions import Version

V = Version.parse("1.0.5")


def host(**kw):
    base = dict(name="prod1", user="deploy", api_root="/srv/sgp-api", service="sgp-api", port=8000)
    return Host.model_validate({**base, **kw})


def test_hostctl_command_quotes_a_hostile_python_path():
    h = host(python="/opt/my python/bin/python3; rm -rf /")
    argv = shlex.split(linux.hostctl(h, "mark", "--reason", "it's $(bad) `really`"))
    assert argv == ["/opt/my python/bin/python3; rm -rf /", "/srv/sgp-api/.sgpfab/hostctl.py", "--root",
                    "/srv/sgp-api", "mark", "--reason", "it's $(bad) `really`"]


def test_prepare_dirs_gives_shared_and_backups_to_the_service_user():
    cmd = linux.prepare_dirs(host(run_as="sgpapi"), "deploy")
    first, second = cmd.split(" && ")
    assert shlex.split(first)[:6] == ["install", "-d", "-m", "755", "-o", "deploy"]
    assert "/srv/sgp-api/releases" in shlex.split(first)
    s = shlex.split(second)
    assert s[:8] == ["install", "-d", "-m", "750", "-o", "sgpapi", "-g", "sgpapi"]
    assert set(s[8:]) == {"/srv/sgp-api/shared", "/srv/sgp-api/shared/db", "/srv/sgp-api/shared/media",
                          "/srv/sgp-api/shared/logs", "/srv/sgp-api/backups"}


def test_build_venv_is_offline_and_uses_the_wheelhouse():
    cmd = linux.build_venv(host(), V, "/srv/sgp-api/.sgpfab/bin/uv")
    assert cmd.startswith("cd /srv/sgp-api/releases/.partial-v1.0.5 && ")
    assert "UV_OFFLINE=1" in cmd and "--no-index" in cmd and "--relocatable" in cmd
    assert "--find-links /srv/sgp-api/wheelhouse -r requirements.txt" in cmd


def test_env_file_points_at_shared_and_is_private():
    lines = linux.env_lines(host(), V)
    assert "API_ROOT=/srv/sgp-api" in lines
    assert "DATABASE_URL=sqlite:////srv/sgp-api/shared/db/app.db" in lines
    assert "MEDIA_ROOT=/srv/sgp-api/shared/media" in lines and "LOG_DIR=/srv/sgp-api/shared/logs" in lines
    assert "APP_VERSION=1.0.5" in lines
    cmd = linux.write_env(host(), V)
    assert cmd.startswith("(umask 077 && ") and cmd.endswith("chmod 600 /srv/sgp-api/releases/.partial-v1.0.5/.env")


def test_unit_runs_current_release_as_unprivileged_user_and_logs_to_shared():
    text = unit_text(host(run_as="sgpapi", port=8123))
    assert "User=sgpapi" in text and "Group=sgpapi" in text
    assert "WorkingDirectory=/srv/sgp-api/releases/current" in text
    assert "Environment=API_ROOT=/srv/sgp-api" in text and "Environment=PORT=8123" in text
    assert "Restart=always" in text
    assert "StandardOutput=append:/srv/sgp-api/shared/logs/sgp-api.log" in text


def test_socket_activation_hands_the_port_to_uvicorn_as_fd_3():
    h = host(port=8123)
    files = units(h)
    assert set(files) == {"/etc/systemd/system/sgp-api.service", "/etc/systemd/system/sgp-api.socket"}
    assert "ListenStream=0.0.0.0:8123" in files["/etc/systemd/system/sgp-api.socket"]
    svc = files["/etc/systemd/system/sgp-api.service"]
    assert ("ExecStart=/srv/sgp-api/releases/current/.venv/bin/python /srv/sgp-api/.sgpfab/serve.py main:app"
            " --fd 3") in svc
    assert "Requires=sgp-api.socket" in svc
    assert "ListenStream=[::1]:8123" in socket_text(host(port=8123, bind="::1"))


def test_without_socket_activation_uvicorn_binds_the_port_itself():
    h = host(port=8123, socket_activation=False)
    assert list(units(h)) == ["/etc/systemd/system/sgp-api.service"]
    assert "--host 0.0.0.0 --port 8123" in unit_text(h) and "Requires=" not in unit_text(h)
    cmd = linux.install_service(h, "main:app")
    assert "systemctl disable --now --quiet sgp-api.socket" in cmd, "switching the mode off removes the socket"


def test_unit_install_reloads_systemd_only_when_a_unit_changed():
    cmd = linux.install_service(host(), "main:app")
    assert "cmp -s /etc/systemd/system/sgp-api.service.sgpfab-tmp /etc/systemd/system/sgp-api.service" in cmd
    assert "cmp -s /etc/systemd/system/sgp-api.socket.sgpfab-tmp /etc/systemd/system/sgp-api.socket" in cmd
    assert 'if [ -n "$reload" ]; then systemctl daemon-reload; fi' in cmd
    assert 'if [ -n "$socket_changed" ]; then systemctl stop sgp-api; systemctl restart sgp-api.socket; fi' in cmd


def test_stop_includes_the_socket_so_nothing_restarts_the_service():
    assert linux.stop(host()) == "systemctl stop sgp-api.socket sgp-api"
    assert linux.stop(host(socket_activation=False)) == "systemctl stop sgp-api"


@pytest.mark.parametrize("bind, url", [("0.0.0.0", "http://127.0.0.1:8000/health"),
                                       ("10.1.2.3", "http://10.1.2.3:8000/health"),
                                       ("::1", "http://[::1]:8000/health")])
def test_health_url_follows_the_bind_address(bind, url):
    assert linux.health_url(host(bind=bind)) == url


def test_health_check_expects_the_version_and_reads_the_restart_count():
    cmd = linux.health_check(host(), V)
    assert "--expect-version 1.0.5" in cmd
    assert cmd.endswith("systemctl show -p NRestarts --value sgp-api")


def test_restart_clears_a_start_limit_first():
    assert linux.restart(host()) == "systemctl reset-failed sgp-api 2>/dev/null; systemctl restart sgp-api"


def test_source_excludes_keep_state_and_junk_out_of_releases():
    from sgpfab.bundle import SOURCE_EXCLUDES
    for pattern in (".git/", ".venv/", "venv/", "db/", "media/", "logs/", ".env", "__pycache__/"):
        assert pattern in SOURCE_EXCLUDES


def test_rsync_uses_the_same_ssh_setup_and_honours_bwlimit(tmp_path):
    from sgpfab.inventory import Inventory
    from sgpfab.transport.ssh import SSHTransport

    (tmp_path / "fleet.yaml").write_text(
        "ssh_config: cfg\nknown_hosts: kh\nhosts: {prod1: {user: deploy, ssh_port: 2222, bwlimit_kbps: 500}}\n")
    (tmp_path / "cfg").write_text("Host prod1\n  HostName 192.0.2.7\n")
    (tmp_path / "kh").write_text("")
    inv = Inventory.load(tmp_path / "fleet.yaml")
    cmd = SSHTransport(inv.hosts["prod1"], inv).rsync_command("/src/", "/srv/x", excludes=[".git/"])
    ssh = shlex.split(cmd[cmd.index("-e") + 1])
    assert ssh[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    assert ["-F", str(tmp_path / "cfg")] == ssh[5:7] and f"UserKnownHostsFile={tmp_path / 'kh'}" in ssh
    assert ssh[-4:] == ["-p", "2222", "-l", "deploy"]
    assert "--bwlimit=500" in cmd and "--exclude=.git/" in cmd
    assert cmd[-2:] == ["/src/", "prod1:/srv/x/"]
