"""Every PowerShell script sgpfab generates for Windows hosts, for one app instance with
realistic and hostile inputs (api_root with blanks, typographic quotes and `$(...)` in commands
and paths): the one place the grammar-gate tests know the builders' signatures."""

import json

from sgpfab import windows
from sgpfab.appspec import AppSpec
from sgpfab.inventory import Inventory
from sgpfab.transport import winrm
from sgpfab.versions import Version

V = Version.parse("1.0.5")
PY = "C:\\Python311\\python.exe"


def instance(tmp_path, api_root="C:\\sgp api", service="sgp-api", extra=""):
    text = f"""
hosts:
  win1: {{os: windows, user: deployer, python: 'C:\\Python311\\python.exe'}}
apps:
  shop:
    source: app
    api_root: {json.dumps(api_root)}
    service: {service}
    processes:
      web: {{server: command, command: "python -m shop \u2018x\u2019 --name=\\"it's\\""}}
      worker: "celery -A shop worker --hostname=w@%h; echo '$(x)'"
    release: ["python manage.py migrate \u2019 \\"done\\"", "echo it\u2019s $env:PATH"]
    writable: [static/cache, media]
{extra}"""
    (tmp_path / "fleet.yaml").write_text(text, encoding="utf-8")
    return Inventory.load(tmp_path / "fleet.yaml").instance("shop", "win1")


def all_scripts(inst) -> dict[str, str]:
    """Every function of windows.py that returns a Cmd, with realistic and hostile inputs."""
    spec = AppSpec.model_validate(
        {
            "processes": {
                "web": {"server": "uvicorn", "app": "shop.main:app", "workers": 2, "args": ["--log-level=info"]},
                "worker": 'celery -A shop worker \u2018q\u2019 "$(x)"',
            },
            "release": ["python manage.py migrate \u2019"],
            "writable": ["static/cache"],
        }
    )
    lay = windows._lay(inst)
    rel = V.release_name
    cmds = {
        "prepare": windows.prepare(inst, "deployer", "NT SERVICE\\sgp-api"),
        "hostctl": windows.hostctl(inst, "mark", "--name", rel, "--bad", "--reason", "it's $(bad) @x \u2019"),
        "hostctl stdin": windows.hostctl(inst, "finalize", "--name", rel, stdin=b"{}"),
        "hostctl_from_stdin": windows.hostctl_from_stdin(inst, b"print(1)", "preflight", "--python", PY),
        "sha256_many": windows.sha256_many([lay.hostctl, lay.host_json, windows.join(lay.tools, "it\u2019s.py")]),
        "write_files": windows.write_files(
            lay.tools, {"hostctl.py": ("x = '\u2019'\n", 0o644), "launch/winrun.py": (b"\x00\xff", 0o644)}
        ),
        "ensure_probe_token": windows.ensure_probe_token(inst),
        "build_venv": windows.build_venv(
            inst,
            V,
            windows.join(lay.tools, "bin", "uv.exe"),
            windows.join(lay.incoming(V), "requirements", "cp311.txt"),
            ("shop-1.0-py3-none-any.whl",),
        ),
        "release_files": windows.release_files(inst, rel, spec),
        "make_writable": windows.make_writable(inst, rel, ("static/cache", "media"), "x"),
        "install_processes": windows.install_processes(inst, rel, spec, "x"),
        "start_processes": windows.start_processes(inst, rel, ["web", "worker"]),
        "stop_processes": windows.stop_processes(inst, rel, ["web", "worker"]),
        "stop_all_but None": windows.stop_all_but(inst, None),
        "stop_all_but release": windows.stop_all_but(inst, rel),
        "run_hook": windows.run_hook(inst, rel, 1, "x"),
        "exec_in_release": windows.exec_in_release(inst, rel, "python -c \"print('\u2019')\"", "x", False),
        "process_log": windows.process_log(inst, "web", 20),
        "logs": windows.logs(inst, ["web", "worker"], 50, None, False),
        "remove_tree": windows.remove_tree(windows.join(lay.releases, "v1.0.4")),
        "list_dir": windows.list_dir(lay.wheelhouse),
        "nssm_version": windows.nssm_version(),
    }
    return {name: c.text for name, c in cmds.items()}


# Named run_as accounts with hostile-but-valid names, and a password no script may show.
ACCOUNTS = {
    "named": ("CORP-EU.X\\svc shop.v2", "pw"),
    "local": (".\\svc-shop_1", "pw"),
    "gmsa": ("CORP\\shop-gmsa$", None),
}
HOSTILE_PASSWORD = 'p\u00e4ss \'w\u2019"rd" $(Get-Date) `n; & | %PATH% \\'


def account_instance(tmp_path, kind: str, api_root="C:\\sgp api"):
    account, secret = ACCOUNTS[kind]
    extra = f"    run_as: {json.dumps(account)}\n" + (f"    run_as_password: {{secret: {secret}}}\n" if secret else "")
    return instance(tmp_path, api_root=api_root, extra=extra)


def account_scripts(tmp_path, api_root="C:\\sgp api") -> dict[str, tuple[str, bytes | None]]:
    """install_processes for each kind of named account: (script, stdin)."""
    spec = AppSpec.model_validate(
        {
            "processes": {"web": {"server": "command", "command": "python -m shop"}, "worker": "python -m shop.worker"},
            "writable": ["media"],
        }
    )
    out = {}
    for kind, (_account, secret) in ACCOUNTS.items():
        d = tmp_path / kind
        d.mkdir(exist_ok=True)
        inst = account_instance(d, kind, api_root)
        cmd = windows.install_processes(
            inst, V.release_name, spec, inst.run_as, **({"password": HOSTILE_PASSWORD} if secret else {})
        )
        out[f"install_processes {kind}"] = (cmd.text, cmd.stdin)
    return out


def transport_scripts() -> dict[str, str]:
    q = windows.q
    return {
        "BOOTSTRAP": winrm.BOOTSTRAP,
        "RECEIVER": winrm.RECEIVER.format(dest=q("C:\\sgp api\\wheelhouse\\it's \u2019q\u2019.whl"), sha=q("ab" * 32)),
        "stdin prefix": winrm.stdin_prefix('{"a": "\u2019"}'.encode()),
    }
