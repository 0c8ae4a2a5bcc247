"""Zero-downtime and small re-deploys on a real host: socket activation keeps the port open
across a deploy and a rollback, so steady traffic sees no failed request (latency may rise,
errors may not); a one-line change sends kilobytes, not the whole release."""

import re

from sgpfab.loadgen import Load


def test_no_request_fails_during_deploy_and_rollback_with_socket_activation(slot, app_variant):
    h = slot.hosts[0]
    slot.fab("-H", h, "deploy", "--version", "1.0.0")
    changed = app_variant("one_line_change", append="# a one-line change")
    with Load(slot.url(h, "/health"), interval=0.005, max_requests=20_000, max_seconds=120) as load:
        out = slot.fab("-H", h, "deploy", "--version", "1.0.1", "--source", str(changed)).stdout
        assert slot.version(h) == "1.0.1"
        slot.fab("-H", h, "rollback")
        assert slot.version(h) == "1.0.0"
    r = load.result
    print(f"\nsocket activation: {r.requests} requests, {r.failed} failed, worst {r.worst_latency_ms:.0f} ms")
    assert r.requests > 200, "the load really ran through both restarts"
    assert r.failed == 0, r.errors
    sent = re.search(rf"{h}\W+ok\W+1\.0\.0\W+1\.0\.1\W+[\d.]+\W+([\d.]+) (kB|MB)", out)
    assert sent and sent.group(2) == "kB" and float(sent.group(1)) < 100, out
