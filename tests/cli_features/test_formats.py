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


# --- hostile names and text: no terminal injection, no crash, no truncated report -------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from ckptlint.report.escape import printable  # noqa: E402
from ckptlint.report.text import format_text  # noqa: E402

_REPO = Path(__file__).resolve().parents[2]
_HOSTILE_LINE = "    x.add_(1)  # \x1b[2J\x1b]0;pwned\x07 \u202e"


def test_printable_escapes_controls_bidi_and_undecodable_bytes() -> None:
    assert printable("a\x1b[31mb\x07\u202ec\tz") == "a\\x1b[31mb\\x07\\u202ec\tz"
    assert printable(os.fsdecode(b"caf\xe9.py")) == "caf\\xe9.py"
    assert printable("two\nlines") == "two\\nlines"


def test_text_output_never_echoes_escape_sequences() -> None:
    bad = Finding("CKP101", "in-place on 'x'", "pkg/\x1b]8;;evil\x07m.py", 1, 4, 1, 13)
    out = format_text([bad], read_line=lambda _p, _l: _HOSTILE_LINE)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    lines = out.splitlines()
    assert lines[0].startswith("pkg/\\x1b]8;;evil\\x07m.py:1:5: CKP101")
    # the caret still sits under x.add_(1)
    assert lines[2].index("x.add_") == lines[3].index("^")


def test_github_output_escapes_control_characters() -> None:
    bad = Finding("CKP101", "msg \x1b[2J", os.fsdecode(b"caf\xe9\x1b.py"), 1, 0, 1, 1)
    line = github.annotation(bad)
    assert "\x1b" not in line and "caf\\xe9\\x1b.py" in line


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(_REPO))
    return subprocess.run([sys.executable, "-m", "ckptlint", *args], cwd=cwd, env=env, capture_output=True, timeout=120)


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    pkg = os.path.join(os.fsencode(tmp_path), b"pkg")
    os.mkdir(pkg)
    driver = (b"from torch.utils.checkpoint import checkpoint\ndef f(x):\n    return checkpoint(g, x, use_reentrant=False)\n"
              b"def g(x):\n" + _HOSTILE_LINE.encode() + b"\n    return x\n")
    for name in (b"caf\xe9.py", b"new\nline.py"):
        with open(os.path.join(pkg, name), "wb") as fh:
            fh.write(driver)
    return tmp_path


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
def test_non_utf8_file_names_in_every_format_and_output_file(odd_tree: Path, fmt: str) -> None:
    report = odd_tree / "report.out"
    report.write_text("previous report\n")
    to_stdout = _cli(["check", "--no-cache", "--format", fmt, "pkg"], odd_tree)
    assert to_stdout.returncode == 1, to_stdout.stderr
    assert b"\x1b" not in to_stdout.stdout and b"Traceback" not in to_stdout.stderr
    proc = _cli(["check", "--no-cache", "--format", fmt, "-o", "report.out", "pkg"], odd_tree)
    assert proc.returncode == 1, proc.stderr
    data = report.read_bytes()
    assert data == to_stdout.stdout
    data.decode("utf-8")  # the report is valid UTF-8 whatever the file names
    if fmt == "sarif":
        log = json.loads(data)
        uris = sorted(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"])
        assert "pkg/caf%E9.py" in uris and "pkg/new%0Aline.py" in uris
        validate_sarif(log)


def test_output_file_is_replaced_atomically_keeping_its_mode(odd_tree: Path) -> None:
    report = odd_tree / "report.txt"
    report.write_text("old\n")
    report.chmod(0o640)
    proc = _cli(["check", "--no-cache", "-o", "report.txt", "pkg"], odd_tree)
    assert proc.returncode == 1
    assert report.stat().st_mode & 0o777 == 0o640
    assert "CKP101" in report.read_text()
    assert sorted(p.name for p in odd_tree.iterdir() if p.name.startswith(".ckptlint-")) == []
