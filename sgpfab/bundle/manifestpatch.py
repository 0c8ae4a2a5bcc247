"""A bundle's manifest sent as its difference from the active release's.

A re-deploy usually changes a few of the manifest's ~40 SHA-256 entries; the host keeps the
manifest of every release it built (releases/NAME/.sgpfab/manifest.json), so the controller sends
only what differs and the SHA-256 of the whole result. The host rebuilds the manifest from its
copy and the patch (`hostctl manifest`) and accepts it only when that SHA-256 matches, so a missing,
older or altered copy on the host can only make it ask for the whole manifest, never verify a
release against the wrong one.

A patch: {"set": {key: value}, "drop": [key], "merge": {key: {"set": {...}, "drop": [...]}}}
(`merge` for object values present on both sides: only their changed entries are sent).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(manifest: dict[str, Any]) -> bytes:
    """The one byte form both sides hash (and the host stores)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(manifest)).hexdigest()


def make(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The patch that turns `base` into `new`."""
    top: dict[str, Any] = {}
    merge: dict[str, dict[str, Any]] = {}
    for key, value in new.items():
        old = base.get(key)
        if key in base and old == value:
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            merge[key] = {
                "set": {k: v for k, v in value.items() if k not in old or old[k] != v},
                "drop": sorted(set(old) - set(value)),
            }
        else:
            top[key] = value
    return {"set": top, "drop": sorted(set(base) - set(new)), "merge": merge}
