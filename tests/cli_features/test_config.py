"""[tool.ckptlint] discovery, validation and rule selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckptlint.config import (
    Config,
    ConfigError,
    GlobMatcher,
    SelectionLayer,
    enabled_codes,
    find_config_file,
    load_config,
)

CODES = ["CKP001", "CKP002", "CKP101", "CKP102", "CKP105", "CKP201", "CKP204", "CKP301", "CKP401"]


def _enabled(*layers: SelectionLayer) -> set[str]:
    return set(enabled_codes(layers, CODES))


def test_default_enables_everything_but_unused_suppression() -> None:
    assert _enabled() == set(CODES) - {"CKP002"}


def test_select_replaces_and_prefix_selects_family() -> None:
    assert _enabled(SelectionLayer(select=("CKP1",))) == {"CKP101", "CKP102", "CKP105"}
    assert _enabled(SelectionLayer(select=("CKP10",))) == {"CKP101", "CKP102", "CKP105"}
    assert _enabled(SelectionLayer(select=("CKP2", "CKP401"))) == {"CKP201", "CKP204", "CKP401"}


def test_ignore_and_specificity() -> None:
    # ignore removes from the default set
    assert "CKP204" not in _enabled(SelectionLayer(ignore=("CKP204",)))
    # a more specific select beats a broader ignore, and vice versa
    on = _enabled(SelectionLayer(select=("CKP101",), ignore=("CKP1",)))
    assert on == {"CKP101"}
    on = _enabled(SelectionLayer(select=("CKP1",), ignore=("CKP101",)))
    assert on == {"CKP102", "CKP105"}


def test_layers_cli_after_file() -> None:
    file_layer = SelectionLayer(select=("CKP1",), ignore=("CKP105",))
    # extend-select on the command line adds to the file's selection
    assert _enabled(file_layer, SelectionLayer(extend_select=("CKP2",))) == {
        "CKP101",
        "CKP102",
        "CKP201",
        "CKP204",
    }
    # --select on the command line starts afresh
    assert _enabled(file_layer, SelectionLayer(select=("CKP105",))) == {"CKP105"}
    # ALL selects everything, including the opt-in CKP002
    assert _enabled(SelectionLayer(select=("ALL",))) == set(CODES)


def _write(tmp: Path, body: str, name: str = "pyproject.toml") -> Path:
    path = tmp / name
    path.write_text(body)
    return path


def test_nearest_pyproject_with_table_is_found(tmp_path: Path) -> None:
    _write(tmp_path, '[tool.ckptlint]\nignore = ["CKP204"]\n')
    sub = tmp_path / "pkg" / "models"
    sub.mkdir(parents=True)
    # a pyproject without our table in between is skipped
    _write(tmp_path / "pkg", '[project]\nname = "x"\n')
    (sub / "m.py").write_text("x = 1\n")
    assert find_config_file(str(sub / "m.py")) == tmp_path / "pyproject.toml"
    cfg = load_config([str(sub)])
    assert cfg.root == str(tmp_path)
    assert "CKP204" not in cfg.enabled()
    assert "CKP101" in cfg.enabled()


def test_isolated_and_explicit_config(tmp_path: Path) -> None:
    _write(tmp_path, '[tool.ckptlint]\nselect = ["CKP4"]\n')
    assert load_config([str(tmp_path)], isolated=True).layers == ()
    other = _write(tmp_path, 'select = ["CKP3"]\nmax-helper-depth = 5\n', "ckptlint.toml")
    cfg = load_config([str(tmp_path)], config_file=str(other))
    assert cfg.max_helper_depth == 5
    assert cfg.layers == (SelectionLayer(select=("CKP3",)),)


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('selec = ["CKP1"]', ["selec", "unknown key"]),
        ('extend_select = ["CKP1"]', ["extend_select", "did you mean 'extend-select'"]),
        ('select = ["CKP9"]', ["select", "'CKP9'", "unknown rule selector"]),
        ('select = ["E501"]', ["select", "'E501'"]),
        ('select = "CKP1"', ["select", "list of strings"]),
        ("max-helper-depth = -1", ["max-helper-depth", "-1"]),
        ("max-helper-depth = true", ["max-helper-depth", "True"]),
        ('max-helper-depth = "3"', ["max-helper-depth", "'3'"]),
        ('checkpoint-functions = ["deepspeed checkpoint"]', ["checkpoint-functions", "deepspeed checkpoint"]),
        ('per-file-ignores = {"tests/*" = ["CKP77"]}', ["per-file-ignores", "CKP77"]),
        ('per-file-ignores = ["x"]', ["per-file-ignores"]),
        ("exclude = [1]", ["exclude", "[1]"]),
    ],
)
def test_bad_values_are_one_line_errors_naming_key_value_file(
    tmp_path: Path, body: str, fragments: list[str]
) -> None:
    path = _write(tmp_path, "[tool.ckptlint]\n" + body + "\n")
    with pytest.raises(ConfigError) as info:
        load_config([str(tmp_path)])
    text = str(info.value)
    assert "\n" not in text
    assert str(path) in text
    for fragment in fragments:
        assert fragment in text, text


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    _write(tmp_path, "[tool.ckptlint]\nselect = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config([str(tmp_path)])


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(["."], config_file=str(tmp_path / "nope.toml"))


def test_all_keys_parse(tmp_path: Path) -> None:
    _write(
        tmp_path,
        """[tool.ckptlint]
select = ["CKP1", "CKP2"]
extend-select = ["CKP401"]
ignore = ["CKP204"]
exclude = ["build_tools"]
extend-exclude = ["legacy/*.py"]
checkpoint-functions = ["deepspeed.checkpointing.checkpoint", "megatron.core.tensor_parallel.checkpoint"]
max-helper-depth = 2

[tool.ckptlint.per-file-ignores]
"tests/**" = ["CKP1"]
"__init__.py" = ["CKP201"]
""",
    )
    cfg = load_config([str(tmp_path)])
    assert cfg.checkpoint_functions == (
        "deepspeed.checkpointing.checkpoint",
        "megatron.core.tensor_parallel.checkpoint",
    )
    assert cfg.max_helper_depth == 2
    assert cfg.ignored_for(str(tmp_path / "tests" / "a" / "t.py")) == ("CKP1",)
    assert cfg.ignored_for(str(tmp_path / "pkg" / "__init__.py")) == ("CKP201",)
    assert cfg.ignored_for(str(tmp_path / "pkg" / "m.py")) == ()
    matcher = cfg.exclude_matcher()
    assert matcher.matches(str(tmp_path / "build_tools" / "x.py"))
    assert matcher.matches(str(tmp_path / "legacy" / "old.py"))
    assert not matcher.matches(str(tmp_path / "legacy" / "sub" / "old.py"))
    assert not matcher.matches(str(tmp_path / "src" / "m.py"))


def test_cli_overrides(tmp_path: Path) -> None:
    cfg = Config(root=str(tmp_path), layers=(SelectionLayer(select=("CKP1",)),), max_helper_depth=2)
    over = cfg.with_cli(select=["CKP401"], max_helper_depth=4, checkpoint_functions=["my.ckpt"])
    assert over.max_helper_depth == 4
    assert over.checkpoint_functions == ("my.ckpt",)
    assert over.enabled() <= {"CKP401"}
    with pytest.raises(ConfigError, match="--select"):
        cfg.with_cli(select=["XYZ"])
    with pytest.raises(ConfigError, match="--ignore"):
        cfg.with_cli(ignore=["CKP9999"])


def test_glob_matcher(tmp_path: Path) -> None:
    m = GlobMatcher(["tests", "*_pb2.py", "src/**/gen_*.py", "docs/conf.py"], str(tmp_path))
    assert m.matches(str(tmp_path / "tests" / "x.py"))
    assert m.matches(str(tmp_path / "a" / "tests" / "x.py"))
    assert m.matches(str(tmp_path / "a" / "foo_pb2.py"))
    assert m.matches(str(tmp_path / "src" / "gen_a.py"))
    assert m.matches(str(tmp_path / "src" / "x" / "y" / "gen_a.py"))
    assert m.matches(str(tmp_path / "docs" / "conf.py"))
    assert not m.matches(str(tmp_path / "a" / "docs" / "conf.py"))
    assert not m.matches(str(tmp_path / "testsuite.py"))
    # segments above the root never match
    inner = tmp_path / "tests" / "proj"
    assert not GlobMatcher(["tests"], str(inner)).matches(str(inner / "m.py"))
    assert not GlobMatcher([], str(tmp_path))
