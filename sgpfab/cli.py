"""`sgpfab`: the console script for what is not a Fabric task.

`sgpfab init [DIR]` sets a project up to use sgpfab's tasks (see sgpfab/scaffold.py);
`sgpfab apply BUNDLE_DIR` applies a bundle on the host it runs on, without SSH (see sgpfab/apply.py).
Errors are one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys

from .errors import SgpfabError


def main(argv: list[str] | None = None) -> int:
    from . import apply, scaffold

    p = argparse.ArgumentParser(prog="sgpfab", description="Deploy Python web apps to fleets with Fabric.")
    sub = p.add_subparsers(dest="cmd", required=True)
    scaffold.add_parser(sub)
    apply.add_parser(sub)
    a = p.parse_args(argv)
    try:
        return int(a.func(a) or 0)
    except SgpfabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
