"""The layering rules of docs/architecture.md, checked on the imports of every module."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "sgpfab"
BUILDERS = {"linux", "windows", "systemd", "runfiles", "cmd", "layout", "hostos"}
TRANSPORTS = {"transport.base", "transport.ssh", "transport.winrm", "transport.local", "transport.rsync"}
DECIDING = {"deploy", "activate", "ops", "fleetops", "rollout", "runner", "session", "tasks", "report"}


def imports() -> dict[str, set[str]]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG).with_suffix("")
        if rel.parts[0] in ("remote", "sandbox"):
            continue
        name = ".".join(rel.parts)
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
                mod = ".".join([*base, *([node.module] if node.module else [])])
                deps |= {f"{mod}.{a.name}".lstrip(".") for a in node.names} if node.module is None else {mod}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("sgpfab.")}
        out[name] = {d.removeprefix("sgpfab.") for d in deps}
    return out


def test_the_module_map_is_read():
    graph = imports()
    assert {"linux", "session", "transport.ssh", "deploy", "tasks"} <= set(graph)
    assert "session" in graph["deploy"]  # the reader sees relative imports


def test_builders_import_no_transport_and_no_deciding_module():
    for name, deps in imports().items():
        if name in BUILDERS:
            assert not deps & (TRANSPORTS | DECIDING), (name, deps & (TRANSPORTS | DECIDING))


def test_transports_decide_nothing():
    for name, deps in imports().items():
        if name in TRANSPORTS:
            bad = {d for d in deps if d in DECIDING or d in BUILDERS - {"windows"} or d.startswith("bundle")}
            assert not bad, (name, bad)


def test_nothing_below_the_tasks_imports_the_tasks_or_the_rich_output():
    for name, deps in imports().items():
        if name not in ("tasks", "report", "api", "cli", "apply"):
            assert not deps & {"tasks", "report"}, (name, deps & {"tasks", "report"})
