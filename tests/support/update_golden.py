"""Rewrite tests/unit/golden/*.txt from the current builders (the ONLY way they change).

    .venv/bin/python tests/support/update_golden.py          # rewrite, list what changed
    .venv/bin/python tests/support/update_golden.py --check  # only list differences (exit 1 if any)

Review `git diff tests/unit/golden` afterwards: every changed line is a change of what runs
on hosts. The tests never write these files.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository (sgpfab)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the support package)

from support.golden_cases import GOLDEN_DIR, cases, golden_path


def main(argv: list[str]) -> int:
    check = "--check" in argv
    rendered = cases()
    changed = []
    for name, text in rendered.items():
        p = golden_path(name)
        if not p.is_file() or p.read_text() != text:
            changed.append(name)
            if not check:
                GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    stale = sorted(p for p in GOLDEN_DIR.glob("*.txt") if p.stem not in rendered) if GOLDEN_DIR.is_dir() else []
    for p in stale:
        changed.append(f"{p.stem} (no longer produced)")
        if not check:
            p.unlink()
    for name in changed:
        print(("differs: " if check else "updated: ") + name)
    print(f"{len(rendered)} golden outputs, {len(changed)} {'differ' if check else 'rewritten'}")
    return 1 if (check and changed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
