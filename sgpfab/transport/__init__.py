"""Transports run commands on a host and move files there. They decide nothing."""

from dataclasses import dataclass


@dataclass
class Result:
    command: str
    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0
