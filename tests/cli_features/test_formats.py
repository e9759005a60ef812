"""SARIF 2.1.0 (schema-validated) and GitHub workflow-command output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ckptlint.report import github, sarif
from ckptlint.types import Edit, Finding, Fix, Site


def _schema_path() -> Path | None:
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / ".." / "shared" / "data" / "sarif-schema-2.1.0.json",
        Path("/work/shared/data/sarif-schema-2.1.0.json"),
    ):
        if candidate.is_file():
            return candidate
    return None


def validate_sarif(log: dict) -> None:
    """Validate against the official SARIF 2.1.0 schema (skip loudly without it)."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is needed to validate SARIF")
    schema_path = _schema_path()
    if schema_path is None:
        pytest.skip(
            "SARIF schema not found at ../shared/data/sarif-schema-2.1.0.json (relative to the repo): "
            "SARIF output is NOT validated in this run"
        )
    schema = json.loads(schema_path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls(schema).validate(log)


FINDINGS = [
    Finding(
        "CKP101",
        "CKP101 in-place masked_fill_() on input 'mask' of checkpointed 'Layer.forward'",
        "pkg/model.py",
        12,
        4,
        12,
        30,
        callable="Layer.forward",
        checkpoint_site=Site("pkg/model.py", 40),
        chain=("Layer.forward",),
        fix=Fix("use masked_fill", "unsafe", (Edit(12, 4, 12, 4, "mask = "), Edit(12, 14, 12, 27, "masked_fill"))),
        statement_lines=(12, 12),
    ),
    Finding("CKP001", "CKP001 syntax error: invalid syntax", "pkg/broken file.py", 1, 0, 1, 0),
]


def test_sarif_validates_and_has_required_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = sarif.sarif_log(FINDINGS, root=str(tmp_path), suppressed=[FINDINGS[0]], errors=[("x.py", "Traceback\nKeyError: 1")])
    validate_sarif(log)
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "ckptlint" and driver["version"] and driver["informationUri"].startswith("https://")
    rule_ids = [r["id"] for r in driver["rules"]]
    assert "CKP002" in rule_ids and rule_ids == sorted(rule_ids)
    for rule in driver["rules"]:
        assert rule["name"] and rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["help"]["text"]
    res = run["results"][0]
    assert res["ruleId"] == "CKP101" and res["level"] == "error"
    loc = res["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "pkg/model.py"
    assert loc["region"] == {"startLine": 12, "startColumn": 5, "endLine": 12, "endColumn": 31}
    assert run["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "pkg/broken%20file.py"
    assert run["results"][2]["suppressions"] == [{"kind": "inSource"}]
    assert run["invocations"][0]["executionSuccessful"] is False
    assert res["fixes"][0]["artifactChanges"][0]["replacements"][1]["insertedContent"]["text"] == "masked_fill"


def test_sarif_uri_relative_to_root_with_forward_slashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()
    sub = tmp_path / "src"
    sub.mkdir()
    monkeypatch.chdir(sub)
    log = sarif.sarif_log([Finding("CKP102", "m", "lib/a.py", 1, 0, 1, 3)])
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "src/lib/a.py"
    validate_sarif(log)


def test_sarif_empty_run_validates(tmp_path: Path) -> None:
    validate_sarif(json.loads(sarif.render([], root=str(tmp_path))))


def test_rule_doc_text_reaches_sarif() -> None:
    from ckptlint import suppressions

    (desc,) = [r for r in sarif.rule_descriptors() if r["id"] == "CKP002"]
    assert desc["name"] == suppressions.NAME
    assert desc["help"]["text"] == suppressions.__doc__.strip()
    assert desc["shortDescription"]["text"].startswith("CKP002 unused-suppression")


def test_github_escaping_matches_actions_toolkit() -> None:
    assert github.escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert github.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_github_lines() -> None:
    f = Finding("CKP101", "in-place add_() on 'x': use x = x.add(...), 100%\nsecond", "dir,1/m:a.py", 3, 0, 4, 7)
    line = github.render([f])
    assert line == (
        "::error file=dir%2C1/m%3Aa.py,line=3,col=1,endLine=4,endColumn=8,title=CKP101::"
        "in-place add_() on 'x': use x = x.add(...), 100%25%0Asecond\n"
    )
    assert github.render([Finding("CKP002", "u", "a.py", 1, 0, 1, 1)]).startswith("::warning ")
