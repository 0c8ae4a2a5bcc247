"""Validate `--json` documents against sgpfab's published JSON Schema (sgpfab/output.schema.json)."""

import json
from pathlib import Path

import jsonschema

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "sgpfab" / "output.schema.json").read_text())
_validator = jsonschema.Draft202012Validator(SCHEMA)


def validated(text: str) -> dict:
    """The single JSON document `text` holds, checked against the schema (AssertionError if not)."""
    doc = json.loads(text)
    errors = sorted(_validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    return doc
