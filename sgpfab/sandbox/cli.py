"""`sgpfab-sandbox up|down|status`: the local nspawn fleet from the command line."""

from __future__ import annotations

import argparse
import sys

from . import fleet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sgpfab-sandbox", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="boot a fleet of real Debian hosts (needs root)")
    u.add_argument("--name", default="demo")
    u.add_argument("--hosts", type=int, default=3, help=f"number of hosts, 1-{fleet.MAX_HOSTS} (staging1, prod1, ...)")
    u.add_argument("--subnet", type=int, default=250, help="third octet of 169.254.X.0/24")
    d = sub.add_parser("down", help="stop a fleet and remove all it made")
    d.add_argument("--name", default="demo")
    s = sub.add_parser("inventory", help="print the path of a running fleet's inventory")
    s.add_argument("--name", default="demo")
    a = p.parse_args(argv)
    if a.cmd == "up":
        try:
            f = fleet.up(a.name, a.hosts, a.subnet)
        except (ValueError, PermissionError, RuntimeError) as e:
            print(f"sgpfab-sandbox: {e}", file=sys.stderr)
            return 1
        print(f.inventory)
    elif a.cmd == "down":
        try:
            fleet.down(a.name)
        except ValueError as e:
            print(f"sgpfab-sandbox: {e}", file=sys.stderr)
            return 1
    else:
        running = fleet.Fleet.load(a.name)
        if running is None:
            print(f"no sandbox fleet named {a.name!r} is up", file=sys.stderr)
            return 1
        print(running.inventory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
