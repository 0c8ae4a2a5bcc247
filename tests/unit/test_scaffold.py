"""`sgpfab init`: the files it writes are usable as written, it never overwrites a file, and bad
input is one `error:` line with exit code 1."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sgpfab import cli, scaffold, starter
from sgpfab.inventory import Inventory

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SGPFAB = REPO / ".venv" / "bin" / "sgpfab"
FAB = REPO / ".venv" / "bin" / "fab"


def init(capsys, *argv):
    code = cli.main(["init", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_writes_a_valid_inventory_a_fabfile_and_the_fabric_config(tmp_path, capsys):
    project = tmp_path / "shop"
    project.mkdir()
    code, out, err = init(capsys, str(project))
    assert (code, err) == (0, "")
    assert out.splitlines()[:3] == ["wrote hosts/fleet.yaml", "wrote fabfile.py", "wrote fabric.yaml"]
    assert "fab -H staging deploy --version 1.0.0" in out

    inv = Inventory.load(project / "hosts" / "fleet.yaml")  # valid as written (placeholder hosts)
    app = inv.app(None)
    assert app.name == "shop" and app.source.resolve() == project.resolve()
    assert [h.name for h in inv.resolve("staging")] == ["staging1"]
    assert [h.name for h in inv.resolve("prod")] == ["prod1", "prod2"]
    assert {"/hosts/", "/dist/", "/fabfile.py", "/fabric.yaml"} <= set(app.spec.exclude)

    assert (project / "fabfile.py").read_text().strip().splitlines() == [starter.FABFILE.strip()]
    config = yaml.safe_load((project / "fabric.yaml").read_text())
    assert config == {"tasks": {"executor_class": "sgpfab.fabric_executor.FleetExecutor"}}


def test_the_fabric_config_makes_fab_run_each_task_once_for_the_host_list(tmp_path):
    """Without fabric.yaml the tasks refuse to run per host; with it, the -H list reaches the
    task (here: an unknown name, refused before anything connects)."""
    assert cli.main(["init", str(tmp_path), "--app", "shop"]) == 0
    r = subprocess.run(
        [str(FAB), "-H", "staging1,nope", "status"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert (r.returncode, r.stderr.strip()) == (
        1,
        "error: -H: unknown host or group 'nope' (known: prod, prod1, prod2, staging, staging1)",
    )
    (tmp_path / "fabric.yaml").unlink()
    r = subprocess.run(
        [str(FAB), "-H", "staging1", "status"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and "fabric.yaml" in r.stderr


@pytest.mark.parametrize("example, reference", [("flask_tasks", "tasks"), ("django_blog", "blog"), ("sgp_api", "sgp")])
def test_the_web_process_and_migrations_are_found_in_the_examples(tmp_path, example, reference):
    project = tmp_path / example
    shutil.copytree(EXAMPLES / example, project)
    hint = starter.web_hint(project)
    ref = yaml.safe_load((REPO / "hosts" / "fleet.yaml").read_text())["apps"][reference]
    assert (hint.server, hint.app) == (ref["processes"]["web"]["server"], ref["processes"]["web"]["app"])
    first = [r if isinstance(r, str) else r["command"] for r in ref["release"][:1]]  # {command, when_changed}
    assert hint.release == tuple(first)
    assert scaffold.write_new(project, scaffold.files(project, example))[0]
    app = Inventory.load(project / "hosts" / "fleet.yaml").app(example)
    assert app.spec.processes["web"].app == ref["processes"]["web"]["app"]
    assert app.spec.release == tuple(first)


def test_a_project_without_hints_gets_a_placeholder_to_edit(tmp_path):
    (tmp_path / "README.md").write_text("nothing to see\n")
    assert starter.web_hint(tmp_path) == starter.PLACEHOLDER
    text = starter.inventory("x", starter.PLACEHOLDER)
    assert "CHANGE ME: your app's module:attribute" in text


def test_existing_files_are_kept_and_named(tmp_path, capsys):
    (tmp_path / "fabfile.py").write_text("# ours\n")
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "fleet.yaml").write_text("# ours too\n")
    code, out, err = init(capsys, str(tmp_path), "--app", "shop")
    assert (code, err) == (0, "")
    assert "wrote fabric.yaml" in out.splitlines()
    assert "kept fabfile.py (it exists; not changed)" in out.splitlines()
    assert "kept hosts/fleet.yaml (it exists; not changed)" in out.splitlines()
    assert (tmp_path / "fabfile.py").read_text() == "# ours\n"
    assert (tmp_path / "hosts" / "fleet.yaml").read_text() == "# ours too\n"
    code, out, _ = init(capsys, str(tmp_path), "--app", "shop")  # again: nothing written
    assert code == 0 and not any(line.startswith("wrote") for line in out.splitlines())


@pytest.mark.parametrize("name", ["true", "1.0", "null", "my.app-2_b"])
def test_any_valid_app_name_stays_a_name_in_the_yaml(tmp_path, capsys, name):
    assert init(capsys, str(tmp_path), "--app", name)[0] == 0
    assert Inventory.load(tmp_path / "hosts" / "fleet.yaml").app(name).name == name


def test_the_current_directory_is_the_default(tmp_path, capsys, monkeypatch):
    project = tmp_path / "My Shop!"
    project.mkdir()
    monkeypatch.chdir(project)
    code, _, _ = init(capsys)
    assert code == 0
    assert Inventory.load(project / "hosts" / "fleet.yaml").app(None).name == "my-shop"


@pytest.mark.parametrize(
    "argv, error",
    [
        (["/nonexistent/sgpfab-h1"], "error: no such directory: /nonexistent/sgpfab-h1"),
        (["{file}"], "error: not a directory: {file}"),
        (
            ["{tmp}", "--app", "bad name"],
            "error: invalid app name 'bad name': use letters, digits, '.', '_' or '-' "
            "(at most 48, starting with a letter or digit)",
        ),
        (
            ["{tmp}", "--app=-x"],
            "error: invalid app name '-x': use letters, digits, '.', '_' or '-' "
            "(at most 48, starting with a letter or digit)",
        ),
        (["{tmp}", "--app", "a" * 49], None),
        (["{odd}"], "error: cannot make an app name from the directory name '___': pass --app NAME"),
        (["{tmp}/nope\nline"], None),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, argv, error):
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "___").mkdir()
    subs = {"file": str(tmp_path / "f.txt"), "tmp": str(tmp_path), "odd": str(tmp_path / "___")}
    argv = [a.format(**subs) for a in argv]
    code, out, err = init(capsys, *argv)
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    if error:
        assert err.strip() == error.format(**subs)
    assert not (tmp_path / "fabfile.py").exists()


def test_the_console_script_reports_a_bad_dir_in_one_line(tmp_path):
    r = subprocess.run([str(SGPFAB), "init", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", f"error: no such directory: {tmp_path / 'missing'}\n")
