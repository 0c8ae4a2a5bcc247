"""The app spec (apps.NAME minus where it runs): process model, hooks, targets, dependencies,
schema. Everything that may reach a host is validated here."""

import pytest
from pydantic import ValidationError
from support.builders import CONTROL

from sgpfab import validate
from sgpfab.appspec import AppSpec, Dependencies, Process, Schema, Target, WebProcess


def spec(**kw) -> AppSpec:
    kw.setdefault("processes", {"web": {"server": "uvicorn", "app": "shop.main:app"}})
    return AppSpec.model_validate(kw)


# -- the web process -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"server": "uvicorn", "app": "shop.main:app"},
        {"app": "shop.main:app"},  # uvicorn is the default
        {"server": "uvicorn", "app": "shop.main:create_app", "factory": True},
        {"server": "uvicorn", "app": "pkg.sub.mod:obj.attr", "workers": 64},
        {"server": "gunicorn", "app": "blog_site.wsgi:application", "workers": 2},
        {"server": "gunicorn", "app": "tasks_app:create_app()"},
        {"server": "gunicorn", "app": "shop.main:app", "interface": "asgi"},
        {"server": "gunicorn", "app": "shop.main:app", "args": ["--timeout=30", "--graceful-timeout", "20"]},
        {"server": "command", "command": "bin/serve --port $PORT"},
        {"server": "command", "command": "bin/serve", "socket": True},
    ],
)
def test_valid_web_processes(data):
    w = WebProcess.model_validate(data)
    assert w.server == data.get("server", "uvicorn")


@pytest.mark.parametrize(
    "data, why",
    [
        ({"server": "uvicorn"}, "needs app"),
        ({"server": "gunicorn"}, "needs app"),
        ({"server": "command"}, "needs a command"),
        ({"server": "uvicorn", "app": "a:b", "command": "x"}, "command and socket are for server: command only"),
        ({"server": "gunicorn", "app": "a:b", "socket": True}, "command and socket are for server: command only"),
        ({"server": "gunicorn", "app": "a:b", "factory": True}, "factory: true is for uvicorn"),
        ({"server": "command", "command": "x", "factory": True}, "factory: true is for uvicorn"),
        ({"server": "uvicorn", "app": "a:create()"}, "set factory: true"),
        ({"server": "uvicorn", "app": "a:create()", "factory": True}, "set factory: true"),
        ({"server": "hypercorn", "app": "a:b"}, "Input should be"),
        ({"app": "a:b", "workers": 0}, "greater than or equal to 1"),
        ({"app": "a:b", "workers": 65}, "less than or equal to 64"),
        ({"app": "a:b", "interface": "rsgi"}, "Input should be"),
        ({"app": "a:b", "unknown": 1}, "Extra inputs"),
    ],
)
def test_invalid_web_processes(data, why):
    with pytest.raises(ValidationError) as e:
        WebProcess.model_validate(data)
    assert why in str(e.value)


@pytest.mark.parametrize(
    "app",
    [
        "a",
        "a:",
        ":b",
        "a:b:c",
        "a.b",
        "a-b:c",
        "a:b-c",
        "1a:b",
        "a:1b",
        "a:b()()",
        "a:b(x)",
        "a :b",
        "a:b ",
        "a/b:c",
        "a:b;rm",
        "é:b",
        "a:b\n",
        "$(x):y",
        "a..b:c",
        "a:b..c",
        "",
    ],
)
def test_bad_app_paths_are_refused(app):
    with pytest.raises(ValidationError):
        WebProcess.model_validate({"server": "gunicorn", "app": app})


@pytest.mark.parametrize(
    "arg", ["--timeout=30", "-w", "4", "--bind=unix:/run/x.sock", "--log-level=debug", "a,b", "x@y", "+1"]
)
def test_server_args_are_single_safe_tokens(arg):
    assert WebProcess(app="a:b", args=(arg,)).args == (arg,)


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "two words",
        "--x='y'",
        '"q"',
        "$HOME",
        "`id`",
        "a;b",
        "a|b",
        "a&b",
        "a\nb",
        "a\tb",
        "*",
        "~",
        "é",
        "x" * 201,
        "a\\b",
        "(x)",
        "<x",
        ">x",
    ],
)
def test_hostile_server_args_are_refused(arg):
    with pytest.raises(ValidationError):
        WebProcess(app="a:b", args=(arg,))


@pytest.mark.parametrize(
    "command",
    [
        "bin/serve",
        "python -m x --flag 'quoted arg' \"dq\" $PORT ${HOST} `id` ; echo | cat & true",
        "tab\tseparated",
        "ünïcode ✓",
        "x" * 2000,
    ],
)
def test_commands_accept_any_single_line(command):
    assert WebProcess(server="command", command=command).command == command
    assert Process(command=command).command == command
    assert spec(release=(command,), build=(command,)).release == (command,)


@pytest.mark.parametrize("command", [*CONTROL, "x" * 2001, "", "   ", "\t"])
def test_hostile_commands_are_refused_everywhere(command):
    with pytest.raises(ValidationError):
        WebProcess(server="command", command=command)
    with pytest.raises(ValidationError):
        Process(command=command)
    with pytest.raises(ValidationError):
        spec(release=(command,))
    with pytest.raises(ValidationError):
        spec(build=(command,))
    with pytest.raises(ValidationError):
        spec(processes={"web": {"server": "uvicorn", "app": "a:b"}, "worker": command})
    with pytest.raises(ValidationError):
        Schema(source="command", command=command)


def test_web_process_properties():
    assert WebProcess(app="a:b").overlaps and WebProcess(server="gunicorn", app="a:b").overlaps
    assert not WebProcess(server="command", command="x").overlaps
    assert WebProcess(app="a:b").socket_activated
    assert not WebProcess(server="command", command="x").socket_activated
    assert WebProcess(server="command", command="x", socket=True).socket_activated


def test_models_are_frozen():
    w = WebProcess(app="a:b")
    with pytest.raises(ValidationError):
        w.workers = 3


# -- processes -----------------------------------------------------------------------------------


def test_processes_shorthand_strings_become_processes():
    s = spec(
        processes={
            "web": {"server": "gunicorn", "app": "a:b"},
            "worker": "python -m w",
            "beat": {"command": "celery beat"},
        }
    )
    assert s.web == WebProcess(server="gunicorn", app="a:b")
    assert s.others == {"worker": Process(command="python -m w"), "beat": Process(command="celery beat")}
    assert list(s.processes) == ["web", "worker", "beat"], "file order is kept"


def test_an_app_without_a_web_process():
    s = spec(processes={"worker": "python -m w"})
    assert s.web is None and s.servers_needed() == []


@pytest.mark.parametrize(
    "processes",
    [
        {},
        None,
        [],
        "web",
        {"Web": "x"},
        {"my-worker": "x"},
        {"w@1": "x"},
        {"1worker": "x"},
        {"_w": "x"},
        {"a" * 25: "x"},
        {"wörker": "x"},
        {"web": "python -m x"},  # web must be a WebProcess mapping
        {"worker": {"command": "x", "server": "uvicorn"}},
    ],
)
def test_invalid_process_tables_are_refused(processes):
    with pytest.raises(ValidationError):
        spec(processes=processes)


def test_process_names_may_use_digits_and_underscores():
    s = spec(processes={"worker_2": "x", "a" * 24: "y"})
    assert set(s.processes) == {"worker_2", "a" * 24}


@pytest.mark.parametrize(
    "web, needed",
    [
        ({"server": "uvicorn", "app": "a:b"}, ["uvicorn"]),
        ({"server": "gunicorn", "app": "a:b"}, ["gunicorn"]),
        ({"server": "gunicorn", "app": "a:b", "interface": "wsgi"}, ["gunicorn"]),
        ({"server": "gunicorn", "app": "a:b", "interface": "asgi"}, ["gunicorn", "uvicorn-worker", "uvicorn"]),
        ({"server": "command", "command": "x"}, []),
    ],
)
def test_servers_needed(web, needed):
    assert spec(processes={"web": web}).servers_needed() == needed


# -- other spec fields ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["static", "static/cache", "media_1", "a.b/c-d"])
def test_writable_directories(path):
    assert spec(writable=(path,)).writable == (path,)


@pytest.mark.parametrize(
    "path",
    [
        "/abs",
        "../up",
        "a/../b",
        "a/..",
        ".sgpfab",
        ".sgpfab/x",
        ".venv",
        ".venv/lib",
        "a//b",
        "a/",
        "",
        "a b",
        ".hidden",
        "é",
        "a\nb",
    ],
)
def test_bad_writable_directories(path):
    with pytest.raises(ValidationError):
        spec(writable=(path,))


def test_patterns_are_single_lines_of_bounded_length():
    assert spec(include=("build/**", "!x"), exclude=("*.log",)).include == ("build/**", "!x")
    for bad in ("a\nb", "x" * 501, ""):
        with pytest.raises(ValidationError):
            spec(include=(bad,))
        with pytest.raises(ValidationError):
            spec(exclude=(bad,))


def test_schema_alias_and_defaults():
    s = spec(schema={"source": "none"})
    assert s.schema_ == Schema(source="none")
    assert spec().schema_ == Schema() and spec().targets == (Target(),)
    assert spec().dependencies == Dependencies()
    dumped = spec(schema={"source": "none"}).model_dump(by_alias=True)
    assert dumped["schema"] == {"source": "none", "command": None}


def test_unknown_spec_keys_and_empty_targets_are_refused():
    with pytest.raises(ValidationError):
        spec(migrate="x")
    with pytest.raises(ValidationError):
        spec(targets=())


# -- targets ---------------------------------------------------------------------------------------


def test_target_defaults_and_key():
    t = Target()
    assert (t.arch, t.glibc, t.python) == ("x86_64", "2.36", "3.11")
    assert t.key == "cp311-x86_64-glibc2.36"
    assert Target(arch="aarch64", glibc="2.17", python="3.12").key == "cp312-aarch64-glibc2.17"


@pytest.mark.parametrize(
    "field, value",
    [
        ("arch", "amd64"),
        ("arch", "arm64"),
        ("arch", "i686"),
        ("glibc", "2"),
        ("glibc", "2.36.1"),
        ("glibc", "2.x"),
        ("glibc", "2.٣6"),
        ("python", "3"),
        ("python", "3.11.7"),
        ("python", "py3.11"),
        ("python", "3.1234"),
        ("glibc", "123.1"),
        ("python", ""),
    ],
)
def test_bad_targets(field, value):
    with pytest.raises(ValidationError):
        Target(**{field: value})


@pytest.mark.parametrize(
    "host, covered",
    [
        (("x86_64", "2.36", "3.11.2"), True),
        (("x86_64", "2.39", "3.11.9"), True),  # a newer glibc runs older manylinux wheels
        (("x86_64", "2.35", "3.11.2"), False),  # an older glibc does not
        (("x86_64", "2.4", "3.11.2"), False),  # 2.4 < 2.36 numerically, not as text
        (("x86_64", "2.100", "3.11.2"), True),
        (("aarch64", "2.36", "3.11.2"), False),
        (("x86_64", "2.36", "3.12.0"), False),  # CPython minor versions must be equal (cp311 ABI)
        (("x86_64", "2.36", "3.10.12"), False),
        (("x86_64", "2.36", "3.1.1"), False),  # 3.1 is not 3.11
        (("x86_64", "2.36", "3.11.0rc1"), True),
        (("x86_64", "", "3.11.2"), False),  # no glibc (musl): never
        (("x86_64", "2.36", ""), False),
    ],
)
def test_target_covers(host, covered):
    assert Target(arch="x86_64", glibc="2.36", python="3.11").covers(*host) is covered


# -- dependencies and schema -------------------------------------------------------------------


def test_dependencies_validation():
    d = Dependencies(source="requirements", file="reqs/prod.txt", extras=("postgres", "s3"), install_project="no")
    assert d.file == "reqs/prod.txt"
    for bad in (
        {"source": "pip"},
        {"file": "../req.txt"},
        {"file": "/etc/req.txt"},
        {"extras": ("a b",)},
        {"extras": ("-e",)},
        {"install_project": "maybe"},
        {"file": ".venv/req.txt"},
        {"x": 1},
    ):
        with pytest.raises(ValidationError):
            Dependencies.model_validate(bad)


def test_schema_command_shape():
    assert Schema(source="command", command="python dump_schema.py").command == "python dump_schema.py"
    for bad in (
        {"source": "command"},
        {"source": "auto", "command": "x"},
        {"source": "none", "command": "x"},
        {"source": "django"},
    ):
        with pytest.raises(ValidationError):
            Schema.model_validate(bad)


# -- the validators themselves -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["tab\tok", "x" * 2000, "ünïcode"])
def test_one_line_accepts(value):
    assert validate.one_line(value, "v") == value


@pytest.mark.parametrize("value", [*CONTROL, "x" * 2001, 5, None, b"x"])
def test_one_line_refuses(value):
    with pytest.raises(ValueError) as e:
        validate.one_line(value, "v")
    assert "\n" not in str(e.value) and "\r" not in str(e.value)


def test_one_line_empty_only_when_allowed():
    assert validate.one_line("", "v", allow_empty=True) == ""
    with pytest.raises(ValueError):
        validate.one_line(" ", "v")


@pytest.mark.parametrize(
    "pattern, good, bad",
    [
        (validate.NAME, ["a", "prod-1", "a.b_c", "A" * 63], ["", "-a", ".a", "a b", "a/b", "A" * 64, "é", "a\n"]),
        (validate.SERVICE, ["shop", "shop-api.v2", "S_1"], ["", "-s", "s@x", "s x", "s/x", "s" * 49]),
        (validate.PROCESS, ["web", "worker_2"], ["Web", "w-1", "w@", "1w", "_w", "w" * 25]),
        (validate.ENV_KEY, ["A", "_A", "a1_B"], ["1A", "A-B", "A B", "", "Ä", "A=B"]),
        (validate.POSIX_USER, ["deploy", "_svc", "svc-1"], ["Deploy", "1svc", "a b", "a\\b", "a" * 33]),
    ],
)
def test_name_patterns(pattern, good, bad):
    for g in good:
        assert validate.check(pattern, g, "x") == g
    for b in bad:
        with pytest.raises(ValueError):
            validate.check(pattern, b, "x")


@pytest.mark.parametrize(
    "value, ok",
    [
        ("a/b", True),
        ("a", True),
        ("a/../b", False),
        ("..", False),
        (".sgpfab", False),
        (".sgpfab/x", False),
        (".sgpfabx", False),
        (".venv/x", False),
        ("/a", False),
        ("a/./b", False),
        ("./a", False),
    ],
)
def test_rel_path(value, ok):
    if ok:
        assert validate.rel_path(value, "p") == value
    else:
        with pytest.raises(ValueError):
            validate.rel_path(value, "p")
