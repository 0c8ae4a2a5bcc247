"""`fab`, with counters: what benchmarks/bench.py runs instead of the `fab` script.

It starts Fabric's program exactly as the `fab` console script does, after wrapping library
calls (not sgpfab's code) with counters:

- exec: commands run over SSH (one paramiko channel each, at least one network round trip);
- ssh_connect: SSH connections made in-process (paramiko handshakes);
- sftp_request: SFTP requests (uploads and reads of files; writes are pipelined);
- spawn:NAME: processes started (rsync runs on a channel of the paramiko connection, through
  sgpfab/transport/relay.py; an ssh process makes one more SSH connection, with its handshake);

and, at exit, the rusage of the fab process itself and of its reaped children, so the
controller's CPU can be split between the Python process (one core at most, under the GIL)
and its helpers. Everything goes as JSON to the file named by $BENCH_COUNTS.

    python benchmarks/fab_counted.py -H staging1 deploy --version 1.0.1 ...
"""

import atexit
import collections
import json
import os
import resource
import subprocess
import sys
import threading
from typing import Any, cast

counts: collections.Counter = collections.Counter()
_lock = threading.Lock()


def bump(key: str) -> None:
    with _lock:
        counts[key] += 1


def _wrap(cls, name: str, key):
    orig = getattr(cls, name, None)
    if orig is None:
        return

    def wrapper(self, *a, **kw):
        bump(key(a) if callable(key) else key)
        return orig(self, *a, **kw)

    cast(Any, wrapper).__wrapped__ = orig
    setattr(cls, name, wrapper)


def _spawn_key(a) -> str:
    args = a[0] if a else None
    first = args if isinstance(args, (str, bytes)) else (args[0] if args else "?")
    if isinstance(first, bytes):
        first = first.decode(errors="replace")
    return "spawn:" + os.path.basename(str(first).split()[0] if first else "?")


def _install() -> None:
    _wrap(subprocess.Popen, "_execute_child", _spawn_key)
    try:
        import paramiko
    except ImportError:
        return
    _wrap(paramiko.Channel, "exec_command", "exec")
    _wrap(paramiko.Transport, "start_client", "ssh_connect")
    _wrap(paramiko.SFTPClient, "_request", "sftp_request")
    _wrap(paramiko.SFTPClient, "_async_request", "sftp_request")


def _write() -> None:
    path = os.environ.get("BENCH_COUNTS")
    if not path:
        return
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    doc = {
        **dict(counts),
        "self_cpu_s": round(me.ru_utime + me.ru_stime, 3),
        "self_maxrss_mb": round(me.ru_maxrss / 1024, 1),
        "children_cpu_s": round(kids.ru_utime + kids.ru_stime, 3),
        "children_maxrss_mb": round(kids.ru_maxrss / 1024, 1),
        "threads_at_exit": threading.active_count(),
    }
    with open(path, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    _install()
    atexit.register(_write)
    from fabric.main import program

    sys.argv[0] = "fab"
    sys.exit(program.run())
