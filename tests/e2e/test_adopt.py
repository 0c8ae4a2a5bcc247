"""A team adopts sgpfab in its own repository: sgpfab installed from its wheel into a fresh venv
outside this repository, `sgpfab init` in a copy of an example app, the inventory pointed at the
sandbox fleet, and that venv's `fab` deploys from the project directory (no SGPFAB_INVENTORY:
hosts/fleet.yaml is found)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
UV = str(Path(sys.executable).with_name("uv"))


def run(*argv: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def install_sgpfab(tmp: Path) -> Path:
    """A venv outside the repository with sgpfab's wheel and its locked dependencies: its bin/."""
    run(UV, "build", "--wheel", "--out-dir", str(tmp / "wheels"), str(ROOT), cwd=tmp)
    wheel = next((tmp / "wheels").glob("sgpfab-*.whl"))
    run(UV, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "-o", str(tmp / "req.txt"), cwd=ROOT)
    run(UV, "venv", "-q", "--python", sys.executable, str(tmp / "venv"), cwd=tmp)
    run(
        UV,
        "pip",
        "install",
        "-q",
        "--python",
        str(tmp / "venv" / "bin" / "python"),
        "-r",
        str(tmp / "req.txt"),
        str(wheel),
        cwd=tmp,
    )
    return tmp / "venv" / "bin"


def docs_example() -> str:
    """The Python block of docs/api.md's 'An Invoke task' section."""
    text = (ROOT / "docs" / "api.md").read_text().split("## An Invoke task", 1)[1]
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def test_a_project_installs_sgpfab_inits_and_deploys(slot_factory, tmp_path):
    s = slot_factory("tasks")  # this test's api_root, service and port on the fleet (and its cleanup)
    bin_ = install_sgpfab(tmp_path)
    where = run(str(bin_ / "python"), "-c", "import sgpfab; print(sgpfab.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(tmp_path / "venv")), where  # the wheel's sgpfab, not this repository's
    project = tmp_path / "flask_tasks"
    shutil.copytree(EXAMPLES / "flask_tasks", project)
    env = {
        k: val
        for k, val in os.environ.items()
        if k not in ("SGPFAB_INVENTORY", "SGPFAB_DIST", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(s.env, PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}", COLUMNS="200")

    out = run(str(bin_ / "sgpfab"), "init", cwd=project, env=env).stdout
    assert {"wrote hosts/fleet.yaml", "wrote fabfile.py", "wrote fabric.yaml"} <= set(out.splitlines())
    assert "fab -H staging deploy --version 1.0.0" in out
    fabfile = (project / "fabfile.py").read_text()
    assert fabfile.count("\n") == 1 and "from sgpfab.tasks import ns" in fabfile

    # The starter inventory found the Flask factory and Flask-Migrate, as this repo's example inventory has them.
    inv = yaml.safe_load((project / "hosts" / "fleet.yaml").read_text())
    app = inv["apps"]["flask_tasks"]
    reference = yaml.safe_load((ROOT / "hosts" / "fleet.yaml").read_text())["apps"]["tasks"]
    assert app["processes"]["web"]["app"] == reference["processes"]["web"]["app"]
    commands = [c["command"] if isinstance(c, dict) else c for c in reference["release"]]
    assert [c["command"] if isinstance(c, dict) else c for c in app["release"]] == commands
    assert app["source"] == ".."

    # A second init keeps every file as it is.
    before = {p: p.read_bytes() for p in (project / "hosts" / "fleet.yaml", project / "fabfile.py")}
    again = run(str(bin_ / "sgpfab"), "init", cwd=project, env=env).stdout
    assert "kept fabfile.py (it exists; not changed)" in again
    assert all(p.read_bytes() == b for p, b in before.items())

    # The team's edit: its hosts (the sandbox fleet), its health check, its secret, and its own
    # tooling (the tasks.py of docs/api.md) kept out of releases.
    inv.update(
        ssh_config=str(s.fleet.ssh_config),
        known_hosts=str(s.fleet.known_hosts),
        hosts={h.name: None for h in s.fleet.hosts[:3]},  # staging1, prod1, prod2: enough for waves
        groups={"staging": ["staging1"], "prod": [h.name for h in s.fleet.hosts[1:3]]},
    )
    app.update(
        api_root=s.api_root,
        service=s.service,
        port=s.port,
        env=reference["env"],
        health={**reference["health"], "timeout": 40},
        exclude=[*app["exclude"], "/tasks.py"],
    )
    (project / "hosts" / "fleet.yaml").write_text(yaml.safe_dump(inv, sort_keys=False))

    r = run(str(bin_ / "fab"), "-H", "staging1", "deploy", "--version", "1.0.0", cwd=project, env=env, timeout=900)
    assert "staging1" in r.stdout and "ok" in r.stdout, r.stdout
    assert (project / "dist" / "flask_tasks" / "releases" / "v1.0.0").is_dir()  # the project's own dist/

    assert s.http("staging1", "/healthz") == (200, b"ok")
    code, job = s.post_json("staging1", "/jobs", {"payload": "adopted"})
    assert code == 201 and job is not None
    released = s.ssh("staging1", f"ls -A {s.api_root}/releases/current/").split()
    assert "tasks_app" in released
    assert not {"hosts", "dist", "fabfile.py", "fabric.yaml", "tasks.py"} & set(released), (
        released
    )  # tooling stays home
    assert s.current("prod1") is None  # only the -H host changed

    # docs/api.md's Invoke tasks, as written there, with this venv's `inv`.
    (project / "tasks.py").write_text(docs_example())
    r = run(str(bin_ / "inv"), "health", "--hosts", "staging1", cwd=project, env=env)
    assert r.stdout.split() == ["staging1", "1.0.0", "healthy"], r.stdout
    bad = subprocess.run(
        [str(bin_ / "inv"), "health", "--hosts", "nope"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "nope" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    r = run(str(bin_ / "inv"), "ship", "--version", "1.0.0", cwd=project, env=env, timeout=900)
    assert "staging1: noop 1.0.0 -> 1.0.0" in r.stdout, r.stdout
    assert all(f"{h}: ok - -> 1.0.0" in r.stdout for h in ("prod1", "prod2")), r.stdout
    r = run(str(bin_ / "inv"), "health", cwd=project, env=env)
    assert sorted(r.stdout.splitlines()) == [
        f"{h.name} 1.0.0 healthy" for h in sorted(s.fleet.hosts[:3], key=lambda h: h.name)
    ]
