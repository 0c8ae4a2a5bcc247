"""The published JSON Schema of `--json` output is itself valid, and documents are checked by it."""

import json

import jsonschema
import pytest
from support.outputs import SCHEMA, validated

from sgpfab.outcome import Outcome, Status
from sgpfab.report import emit_json, outcome_dict


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_documents_emitted_by_sgpfab_validate(capsys):
    o = Outcome("h1", "deploy", Status.FAILED, "1.0.0", "1.0.0", "boom", 1.5, 10, {"upload": 0.5})
    emit_json(
        "rollout", title="deploy x 1.0.1", stopped="stopped after wave 1", exit_code=2, outcomes=[outcome_dict(o)]
    )
    first = capsys.readouterr().out
    emit_json("error", error="unknown host or group 'x'")
    second = capsys.readouterr().out
    assert [validated(d)["kind"] for d in (first, second)] == ["rollout", "error"]


@pytest.mark.parametrize(
    "doc",
    [
        {"schema": "sgpfab/2", "kind": "error", "error": "x"},
        {"schema": "sgpfab/1", "kind": "error"},
        {"schema": "sgpfab/1", "kind": "rollout", "title": "t", "stopped": None, "exit_code": 3, "outcomes": []},
        {
            "schema": "sgpfab/1",
            "kind": "rollout",
            "title": "t",
            "stopped": None,
            "exit_code": 0,
            "outcomes": [
                {
                    "host": "h",
                    "action": "deploy",
                    "status": "maybe",
                    "ok": True,
                    "before": None,
                    "after": "1",
                    "message": "",
                    "seconds": 0,
                    "bytes_sent": 0,
                    "timings": {},
                }
            ],
        },
        {"schema": "sgpfab/1", "kind": "nonsense"},
    ],
)
def test_wrong_documents_are_caught(doc):
    with pytest.raises(AssertionError):
        validated(json.dumps(doc))
