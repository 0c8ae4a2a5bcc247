"""Run many `fab` command lines in ONE process (the real entry point, fabric.main.program), so
the CLI tests do not pay Python's and sgpfab's start-up for each (about 2 s).

    python tests/support/fab_driver.py < cases.json > results.json

Input: a JSON list of {"argv": ["-H", "h1", "deploy", ...], "env": {NAME: value or null}}; run
in the current directory. Output: a JSON list of {"rc", "out", "err"} (an exception escaping
the program is reported as the interpreter would: exit 1 and the traceback on stderr).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def run_one(argv: list[str], env: dict[str, str | None]) -> dict:
    from fabric.main import program

    saved = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    out, err = io.StringIO(), io.StringIO()
    rc = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                program.run(["fab", *argv], exit=True)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                rc = 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}


def main() -> int:
    sys.path.insert(0, os.getcwd())
    cases = json.load(sys.stdin)
    results = [run_one(c["argv"], c.get("env") or {}) for c in cases]
    sys.stdout.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
