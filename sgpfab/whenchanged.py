"""Whether each release command must run on a host: a command with `when_changed` patterns is
skipped only when the host's active release was deployed from a bundle the controller still has,
with identical files (path and SHA-256) for every path matching the patterns, the same
dependencies, the same command and the same settings. Anything unknown means: run it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pathspec
from pydantic import ValidationError

from .bundle import Bundle
from .bundle.model import Manifest, Metadata, content_digest
from .state import Release
from .versions import display


@dataclass(frozen=True)
class Decision:
    index: int  # 1-based, as in `hook N`
    command: str
    run: bool
    reason: str  # why it runs (or '' when it always does), or why it is skipped

    def describe(self, total: int) -> str:
        if self.run:
            return f"release command {self.index}/{total}: {self.command}" + (
                f" ({self.reason})" if self.reason else ""
            )
        return f"release command {self.index}/{total} skipped: {self.reason}"


def changed_paths(old: Mapping[str, str], new: Mapping[str, str], patterns: Iterable[str]) -> list[str]:
    """Paths matching the gitignore-style patterns that were added, removed or changed (SHA-256)."""
    spec = pathspec.GitIgnoreSpec.from_lines(list(patterns))
    paths = set(old) | set(new)
    return sorted(p for p in paths if old.get(p) != new.get(p) and spec.match_file(p))


def active_bundle(bundle: Bundle, active: Release) -> tuple[Manifest, Metadata] | None:
    """The manifest and metadata of the bundle the active release came from, when it lies beside
    `bundle` (dist/APP/releases/NAME) and its content digest is the one the host recorded. Only
    the two JSON files are read: the digest covers every file's SHA-256 and the spec."""
    path = Path(bundle.path).parent / active.name
    try:
        m = Manifest.model_validate(json.loads((path / "manifest.json").read_text()))
        md = Metadata.model_validate(json.loads((path / "metadata.json").read_text()))
    except (OSError, ValueError, ValidationError):
        return None
    digest = active.meta.bundle_digest
    if not digest or m.app != bundle.app or m.content_digest != digest or content_digest(m, md) != digest:
        return None
    return m, md


def decide(bundle: Bundle, active: Release | None, settings_changed: bool | None) -> list[Decision]:
    """One decision per release command of `bundle`, for a host whose active release is `active`
    (None: nothing deployed). `settings_changed` None means unknown (counts as changed)."""
    spec = bundle.spec
    out = []
    previous = None
    why_run = ""
    since = display(active.name) if active else ""
    if any(spec.release_when_changed):
        if active is None:
            why_run = "no active release"
        elif active.name == bundle.version.release_name:
            why_run = "re-activating the same version"
        elif settings_changed is not False:
            why_run = "the settings changed" if settings_changed else "the settings may have changed"
        else:
            previous = active_bundle(bundle, active)
            if previous is None:
                why_run = f"the bundle of the active release {since} is not in {bundle.path.parent}"
            elif previous[0].requirements != bundle.manifest.requirements:
                previous, why_run = None, f"the dependencies changed since {since}"
    for i, command in enumerate(spec.release, start=1):
        patterns = spec.when_changed(i)
        if not patterns:
            out.append(Decision(i, command, True, ""))
        elif previous is None:
            out.append(Decision(i, command, True, why_run))
        elif (command, patterns) not in zip(previous[1].spec.release, _all_patterns(previous[1]), strict=True):
            out.append(Decision(i, command, True, f"the command is new since {since}"))
        else:
            changed = changed_paths(previous[0].files, bundle.manifest.files, patterns)
            if changed:
                more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
                out.append(Decision(i, command, True, f"{changed[0]}{more} changed"))
            else:
                out.append(Decision(i, command, False, f"no file matching {', '.join(patterns)} changed since {since}"))
    return out


def _all_patterns(md: Metadata) -> list[tuple[str, ...]]:
    return [md.spec.when_changed(i) for i in range(1, len(md.spec.release) + 1)]
