"""The inference layer: values of module-building expressions across helpers, objects and files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ckptlint.engine import lint
from ckptlint.infer import Evaluator, Frame, known
from ckptlint.infer.scope import scope_env
from ckptlint.project import ClassInfo, Project

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _write(tmp_path: Path, files: dict[str, str]) -> list[str]:
    paths = []
    for rel, src in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
        paths.append(str(p))
    return paths


def _codes_lines(paths: list[str]) -> list[tuple[str, int]]:
    return sorted((f.code, f.line) for f in lint(paths).findings)


def _evaluator(path: str) -> tuple[Project, Evaluator]:
    project = Project([path])
    return project, Evaluator(project)


def _cls(project: Project, path: str, name: str) -> ClassInfo:
    mod = project.module(path)
    found = project.lookup(f"{mod.name}.{name}", mod)
    assert isinstance(found, ClassInfo)
    return found


def _without(source: str, start: str, end: str) -> str:
    a, b = source.index(start), source.index(end)
    return source[:a] + source[b:]


def test_builder_constant_key_resolves_to_groupnorm(tmp_path: Path) -> None:
    source = (FIXTURES / "shape_builder_object_norm_factory.py").read_text()
    gn_only = _without(source, "class TinyEfficientNet", "class TinyGNNet")
    bn_only = source[: source.index("class TinyGNNet")]
    assert _codes_lines(_write(tmp_path / "gn", {"m.py": gn_only})) == []
    assert [c for c, _ in _codes_lines(_write(tmp_path / "bn", {"m.py": bn_only}))] == ["CKP204", "CKP204"]


def test_residual_helper_binds_its_constructor_argument(tmp_path: Path) -> None:
    source = (FIXTURES / "shape_sequential_attribute_called.py").read_text()
    only_gn = source.replace("        return checkpoint(self.shortcut, x, use_reentrant=False)\n", "        return x\n")
    found = _codes_lines(_write(tmp_path, {"m.py": only_gn}))
    assert ("CKP204", 23) not in found  # Residual(nn.Sequential(... GroupNorm ...)): nothing in Residual.forward
    assert ("CKP204", 40) in found


def test_setattr_with_track_running_stats_false_is_benign(tmp_path: Path) -> None:
    source = (FIXTURES / "shape_children_computed_names.py").read_text()
    stateless = _without(source, "class RegStage", "class StatelessStage")
    stateless = stateless.replace("        self.s1 = RegStage(2, chs)\n", "").replace("self.s2(self.s1(x))", "self.s2(x)")
    assert _codes_lines(_write(tmp_path, {"m.py": stateless})) == []


def test_add_module_star_collects_tuple_position_one() -> None:
    path = str(FIXTURES / "shape_stage_builder_named_stages.py")
    project, ev = _evaluator(path)
    table = ev.attr_table(_cls(project, path, "ResNetLike"))
    stages = table["*"]
    assert stages and all(s.is_container for s in stages)
    members = {el.short_name for s in stages for el in s.elements}
    assert members == {"Bottleneck"}  # via dict(block=Bottleneck): the parameter has no default
    assert ev.self_attribute(_cls(project, path, "ResNetLike"), "layer1") == stages


def test_children_iterates_computed_names() -> None:
    path = str(FIXTURES / "shape_children_computed_names.py")
    project, ev = _evaluator(path)
    table = ev.attr_table(_cls(project, path, "RegStage"))
    assert [i.short_name for i in table["*"]] == ["Bottleneck"]


def test_helper_depth_is_a_budget_not_a_constant(tmp_path: Path) -> None:
    chain = "import torch.nn as nn\n"
    for i in range(1, 7):
        chain += f"def h{i}(n):\n    return h{i + 1}(n)\n"
    chain += "def h7(n):\n    return nn.BatchNorm2d(n)\n"
    chain += "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.bn = h1(4)\n"
    (path,) = _write(tmp_path, {"m.py": chain})
    project, ev = _evaluator(path)
    cls = _cls(project, path, "M")
    assert [i.qualnames for i in ev.attr_table(cls)["bn"]] == [("torch.nn.BatchNorm2d",)]
    assert ev.spent == 7  # one bound call per helper, each evaluated once
    _, starved = _evaluator(path)
    starved.reset_budget(0)
    # Without budget the helpers still run, unbound (defaults only): the answer is the same here.
    assert [i.qualnames for i in starved.attr_table(cls)["bn"]] == [("torch.nn.BatchNorm2d",)]
    assert starved.spent == 0


def test_tuple_unpacking_and_positions(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, {"m.py": """
        import torch.nn as nn
        def make():
            layers = []
            layers.append(("norm", nn.BatchNorm2d(4)))
            return layers, {"n": 1}
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                pairs, info = make()
                for name, layer in pairs:
                    self.add_module(name, layer)
                first, second = nn.GroupNorm(1, 4), nn.LayerNorm(4)
                self.a = second
    """})
    project, ev = _evaluator(path)
    table = ev.attr_table(_cls(project, path, "M"))
    assert [i.qualnames for i in table["*"]] == [("torch.nn.BatchNorm2d",)]
    assert [i.qualnames for i in table["a"]] == [("torch.nn.LayerNorm",)]


def test_property_getter_returns_registered_module(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, {"m.py": """
        import torch.nn as nn
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm1_name = "bn1"
                self.add_module(self.norm1_name, nn.BatchNorm2d(4))
            @property
            def norm1(self):
                return getattr(self, self.norm1_name)
    """})
    project, ev = _evaluator(path)
    found = ev.self_attribute(_cls(project, path, "M"), "norm1")
    assert found is not None and [i.qualnames for i in found] == [("torch.nn.BatchNorm2d",)]


def test_star_import_resolves_through_the_star_module(tmp_path: Path) -> None:
    paths = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/blocks.py": "import torch.nn as nn\nclass Block(nn.Module):\n    pass\n",
        "pkg/builder.py": "from .blocks import *\nclass B:\n    def make(self):\n        return Block()\n",
    })
    project = Project(paths)
    mod = project.module(paths[2])
    assert project.resolve_name(mod, "Block") == ["pkg.blocks.Block"]


def test_known_classes_data_file() -> None:
    data = known.table()
    assert set(data) >= {"containers", "batchnorm", "classes", "factories", "cfg-types"}
    assert known.is_container(("mmengine.model.ModuleList",))
    assert known.container_kind(("mmengine.model.Sequential",)) == ("torch.nn.Sequential",)
    assert "timm.layers.BatchNormAct2d" in known.batchnorm_names()
    entry = known.known_class(("torchvision.ops.misc.Conv2dNormActivation",))
    assert entry is not None and "torch.nn.BatchNorm2d" in entry.contains
    assert known.cfg_type_class("BN") == "torch.nn.BatchNorm2d"


def test_out_of_tree_container_subclass(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, {"m.py": """
        import torch.nn as nn
        from mmengine.model import ModuleList
        from torch.utils.checkpoint import checkpoint
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = ModuleList([nn.BatchNorm2d(4) for _ in range(2)])
            def forward(self, x):
                for layer in self.layers:
                    x = checkpoint(layer, x, use_reentrant=False)
                return x
    """})
    assert [c for c, _ in _codes_lines([path])] == ["CKP204"]


def test_scope_records_registrations() -> None:
    import libcst as cst

    fn = cst.parse_module(textwrap.dedent("""
        def __init__(self, names):
            setattr(self, "fixed", A())
            setattr(self, names[0], B())
            self.add_module(*pair)
            a, b = make()
    """)).body[0]
    assert isinstance(fn, cst.FunctionDef)
    env = scope_env(fn, "self")
    assert "fixed" in env.self_attrs
    assert [star for _, star in env.dynamic_attrs] == [False, True]
    assert [k for _, k in env.unpacked["b"]] == [1]


def test_frames_are_keyed_by_scope(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, {"m.py": "import torch.nn as nn\nX = nn.BatchNorm2d(2)\n"})
    project, ev = _evaluator(path)
    mod = project.module(path)
    value = mod.assigns["X"][0]
    first = ev.instances_in(value, Frame(mod, None))
    assert [i.qualnames for i in first] == [("torch.nn.BatchNorm2d",)]
    assert ev.instances_in(value, Frame(mod, None)) == first  # memoised, same answer
