"""A Fabric executor that hands the whole `-H` list to each task once.

Fabric runs a task once per `-H` host, serially, each with a Connection. sgpfab tasks work on a
fleet (groups, preflight checks on every host before any change, waves), so this executor runs
each task once and puts the host names in `c.config.sgpfab.hosts`. It is selected through the
collection's configuration (`tasks.executor_class`), so the stock `fab` command uses it.
"""

from typing import Any

from fabric.executor import Executor


class FleetExecutor(Executor):  # type: ignore[misc, unused-ignore]  # fabric is untyped: Executor is Any (strict only)
    def expand_calls(self, calls: list[Any], apply_hosts: bool = True) -> list[Any]:
        host_str = self.core[0].args.hosts.value if apply_hosts else None
        if host_str:
            hosts = [h.strip() for h in host_str.split(",") if h.strip()]
            self.config.load_overrides({"sgpfab": {"hosts": hosts}})
        expanded: list[Any] = super().expand_calls(calls, apply_hosts=False)
        return expanded
