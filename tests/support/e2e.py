"""Helpers for end-to-end tests."""

import threading
import time
import uuid


class Writer:
    """A bounded writer: POSTs items as fast as it can; records every acknowledged (2xx) one."""

    def __init__(self, slot, host, limit=4000, seconds=120):
        self.slot, self.host, self.limit, self.deadline = slot, host, limit, time.monotonic() + seconds
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set() and len(self.acked) < self.limit and time.monotonic() < self.deadline:
            name = uuid.uuid4().hex[:12]
            code, _ = self.slot.post_json(self.host, "/items", {"name": name})
            if 200 <= code < 300:
                self.acked.append(name)
            else:
                time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        time.sleep(1)
        self.stop.set()
        self.t.join(30)
