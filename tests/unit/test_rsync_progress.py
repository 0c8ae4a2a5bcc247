"""rsync's whole-transfer progress, parsed from real rsync output (a local copy, throttled so
rsync reports more than once)."""

import os

from sgpfab.transport import rsync


def test_progress_lines_are_parsed_and_others_are_not():
    assert rsync.parse_progress("     12,345,678  45%   10.20MB/s    0:00:02 (xfr#3, to-chk=5/20)") == (12345678, 45)
    assert rsync.parse_progress("          0 100%    0.00kB/s    0:00:00 (xfr#0, to-chk=0/3)") == (0, 100)
    assert rsync.parse_progress("Number of files: 3 (reg: 2, dir: 1)") is None
    assert rsync.parse_progress("") is None
    assert rsync.stat("Total bytes sent: 1,234\n", "Total bytes sent") == 1234
    assert rsync.stat("nothing here", "Total bytes sent") == 0


def test_a_real_copy_reports_growing_bytes_up_to_the_whole_and_keeps_the_stats(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(os.urandom(256 * 1024))
    seen: list[tuple[int, int | None]] = []
    r = rsync.run(["rsync", "-a", "--stats", "--bwlimit=2000", f"{src}/", f"{dest}/"], lambda b, p: seen.append((b, p)))
    assert r.exited == 0, r.stderr
    assert len(seen) >= 2 and seen[-1] == (4 * 256 * 1024, 100)
    assert [b for b, _ in seen] == sorted(b for b, _ in seen)
    assert rsync.stat(r.stdout, "Number of regular files transferred") == 4
    assert sorted(p.name for p in dest.iterdir()) == ["f0.bin", "f1.bin", "f2.bin", "f3.bin"]


def test_without_a_callback_the_output_is_rsyncs_own(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("x")
    r = rsync.run(["rsync", "-a", "--stats", f"{tmp_path / 'a'}/", f"{tmp_path / 'b'}/"])
    assert r.exited == 0 and rsync.stat(r.stdout, "Number of regular files transferred") == 1
    bad = rsync.run(["rsync", "-a", f"{tmp_path / 'missing'}/", f"{tmp_path / 'c'}/"], lambda b, p: None)
    assert bad.exited != 0 and "missing" in bad.stderr
