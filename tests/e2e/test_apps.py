"""Real apps deployed as they are: Flask under gunicorn with a background worker (requirements
file), Django with migrations, collected static files and uploaded media (a uv project without
gunicorn, whose Pillow ships manylinux_2_28 wheels only), FastAPI (a uv package with an
sdist-only dependency). Under load through deploys and rollbacks no request fails."""

import json
import re
import time
import uuid

from sgpfab.loadgen import Load


def _journal(slot, h, unit_glob):
    return slot.ssh(h, f"sudo journalctl --no-pager -o short-unix -u '{unit_glob}'")


def _job_done(slot, h, payload):
    code, job = slot.post_json(h, "/jobs", {"payload": payload})
    assert code == 201, job
    for _ in range(60):
        job = slot.get_json(h, f"/jobs/{job['id']}")
        if job["status"] == "done":
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job} was never done")


def test_flask_app_with_a_worker_deploys_as_is_and_restarts_without_failed_requests(tasks_slot):
    s = tasks_slot
    a, b = s.hosts
    s.fab("-H", f"{a},{b}", "deploy", "--version", "1.0.0", "--parallel", "2")
    for h in (a, b):
        assert s.http(h, "/healthz") == (200, b"ok")
        assert _job_done(s, h, "hello")["result"] == "olleh", "the worker process runs the release's code"
        assert s.units(h) == sorted(
            [f"{s.service}-web@v1.0.0.service", f"{s.service}-worker@v1.0.0.service", f"{s.service}.socket"]
        )
    changed = s.variant("v101", append={"tasks_app/views.py": "# a one-line change"})
    with Load(s.url(a, "/healthz"), interval=0.005, max_requests=20_000, max_seconds=180) as load:
        out = s.fab("-H", a, "deploy", "--version", "1.0.1", "--source", str(changed)).stdout
        s.fab("-H", a, "rollback")
    r = load.result
    print(f"\ngunicorn: {r.requests} requests, {r.failed} failed, worst {r.worst_latency_ms:.0f} ms")
    assert r.requests > 200 and r.failed == 0, r.errors
    sent = re.search(rf"{a}\W+ok\W+1\.0\.0\W+1\.0\.1\W+[\d.]+\W+([\d.]+) (kB|MB)", out)
    assert sent and sent.group(2) == "kB" and float(sent.group(1)) < 100, out
    assert s.current(a) == "v1.0.0" and _job_done(s, a, "again")["result"] == "niaga"
    # The worker was stopped before the next one started, every time: never two at once.
    log = _journal(s, a, f"{s.service}-worker@*")
    events = [
        (float(t), what, rel)
        for t, what, rel in re.findall(
            r"^(\d+\.\d+) \S+ systemd\[1\]: (Started|Stopped) \S+-worker@(\S+)\.service", log, re.M
        )
    ]
    running = 0
    for _, what, _ in sorted(events):
        running += 1 if what == "Started" else -1
        assert running <= 1, events
    assert [e[1:] for e in sorted(events)][-4:] == [
        ("Stopped", "v1.0.0"),
        ("Started", "v1.0.1"),
        ("Stopped", "v1.0.1"),
        ("Started", "v1.0.0"),
    ], events


def test_a_worker_that_crashes_after_the_switch_rolls_the_release_back(tasks_slot):
    s = tasks_slot
    h = s.hosts[1]
    s.fab("-H", h, "deploy", "--version", "1.0.0")
    worker = (s.variant("tmp") / "tasks_app/worker.py").read_text()
    crashing = s.variant(
        "crash",
        files={
            "tasks_app/worker.py": worker.replace(
                "def main() -> int:", 'def main() -> int:\n    raise SystemExit("worker cannot start: no queue")', 1
            )
        },
    )
    r = s.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(crashing), ok=False)
    assert re.search(rf"{s.service}-worker@v1\.0\.1\.service keeps crashing", r.stdout), r.stdout
    assert "rolled back to v1.0.0 (healthy)" in r.stdout and "worker cannot start" in r.stdout
    assert s.current(h) == "v1.0.0"
    assert s.units(h) == sorted(
        [f"{s.service}-web@v1.0.0.service", f"{s.service}-worker@v1.0.0.service", f"{s.service}.socket"]
    )
    assert _job_done(s, h, "still works")["status"] == "done"


def test_a_failing_release_command_switches_nothing_and_says_which_host_and_what(tasks_slot):
    s = tasks_slot
    h = s.hosts[0]
    s.fab("-H", h, "deploy", "--version", "1.0.0")
    _job_done(s, h, "before")
    s.configure(
        release=[
            "flask --app tasks_app db upgrade",
            "python -c \"import sys; print('exploded: 100% of $HOME'); sys.exit(3)\"",
        ]
    )
    before = s.release_state(h)
    r = s.fab("-H", h, "deploy", "--version", "1.0.1", ok=False)
    assert re.search(
        rf"{h}: release command .*exploded.* of 1\.0\.1 failed \(exit 3\); nothing was switched", r.stdout
    ), r.stdout
    assert "exploded: 100% of $HOME" in r.stdout, "the command ran verbatim: no shell or systemd expansion"
    assert s.current(h) == "v1.0.0" and s.units(h) == before[1]
    assert _job_done(s, h, "after")["result"] == "retfa"


def test_django_project_with_static_files_and_uploaded_media(blog_slot):
    s = blog_slot
    h = s.hosts[0]
    s.fab("-H", h, "deploy", "--version", "1.0.0")
    code, body = s.http(h, "/")
    assert code == 200 and b"No posts yet" in body
    css = re.search(rb'href="(/static/posts/style\.[0-9a-f]+\.css)"', body)
    assert css and s.http(h, css.group(1).decode())[0] == 200, (
        "collectstatic ran into the release; whitenoise serves it"
    )
    png = _tiny_png()
    boundary = uuid.uuid4().hex
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="body"\r\n\r\nworld\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="dot.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    code, body = s.http(h, "/posts", form, {"content-type": f"multipart/form-data; boundary={boundary}"}, "POST")
    assert code == 201, body
    media = "/media/" + json.loads(body)["image_url"].split("/media/", 1)[1]
    assert s.http(h, media) == (200, png)
    assert s.ssh(h, f"sudo ls {s.api_root}/shared/media/posts").split() == ["dot.png"], "uploads live in shared/"
    meta = json.loads((s.dist / "blog/releases/v1.0.0/metadata.json").read_text())
    assert meta["install"]["added"] == ["gunicorn==27.0.1"], "the project has no server: sgpfab added its pinned one"
    assert any(
        "manylinux_2_28" in w for w in json.loads((s.dist / "blog/releases/v1.0.0/manifest.json").read_text())["wheels"]
    )
    s.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(s.variant("v101", append={"posts/views.py": "# x"})))
    assert s.http(h, media) == (200, png) and b"hello" in s.http(h, "/")[1]
    s.fab("-H", h, "rollback")
    assert s.current(h) == "v1.0.0" and s.http(h, media) == (200, png)


def test_fastapi_uv_project_zero_failed_requests_and_one_off_commands(slot):
    h = slot.hosts[1]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    meta = json.loads((slot.dist / "sgp/releases/v1.0.0/metadata.json").read_text())
    assert meta["install"]["project"].startswith("sgp_api-") and meta["schema"]["source"] == "alembic"
    assert any(
        w.startswith("docopt-0.6.2-py")
        for w in json.loads((slot.dist / "sgp/releases/v1.0.0/manifest.json").read_text())["wheels"]
    ), "docopt is sdist-only on PyPI: its wheel was built on the controller"
    changed = slot.variant("v101", append={"sgp_api/main.py": "# a one-line change"})
    with Load(slot.url(h, "/health"), interval=0.005, max_requests=20_000, max_seconds=180) as load:
        slot.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(changed))
        slot.fab("-H", h, "rollback")
    r = load.result
    print(f"\nuvicorn: {r.requests} requests, {r.failed} failed, worst {r.worst_latency_ms:.0f} ms")
    assert r.requests > 200 and r.failed == 0, r.errors
    slot.post_json(h, "/items", {"name": "from http"})
    out = slot.fab("-H", h, "exec", "--command", "sgp-api-admin add 'from exec' && sgp-api-admin list").stdout
    assert "from http" in out and "from exec" in out
    assert [i["name"] for i in slot.get_json(h, "/items")] == ["from http", "from exec"]


def _tiny_png() -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )
