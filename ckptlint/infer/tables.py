"""What ``self.<attr>`` holds: per-class tables of the modules ``__init__`` registers.

``self.bn = norm_layer(c)``, ``self.add_module("norm1", layer)``,
``setattr(self, name, m)`` and ``self.add_module(*stage)`` (registered under
a computed name, kept as ``"*"``), base classes first; properties and simple
getters (``@property def norm1(self): return getattr(self, self.norm1_name)``)
are evaluated on demand; ``self.children()``/``modules()`` is every
registered module. An in-tree ``nn.Sequential`` subclass without a
``forward`` of its own (``class ConvBN(nn.Sequential)`` filled by
``super().__init__(conv, bn)`` or ``self.add_module("bn", ...)``) is a
Sequential of what its ``__init__`` registers.
"""

from __future__ import annotations

from dataclasses import replace

import libcst as cst

from ckptlint.analysis import names as N
from ckptlint.analysis.walk import walk
from ckptlint.infer import known
from ckptlint.infer.lattice import Frame, Instance, truth_in
from ckptlint.infer.scope import GETATTR_KEY_PREFIX, Env, bind, first_param
from ckptlint.infer.sequences import Sequences
from ckptlint.project import ClassInfo, Project, dotted_name

__all__ = ["Tables"]


class Tables(Sequences):
    """Per-class attribute tables (the evaluator's ``instances_in`` evaluates their expressions)."""

    def __init__(self, project: Project) -> None:
        super().__init__(project)
        self._attr_tables: dict[int, dict[str, list[Instance]]] = {}
        self._bound_tables: dict[tuple[int, ...], dict[str, list[Instance]] | None] = {}
        self._init_envs: dict[tuple[int, ...], Env | None] = {}

    def self_attribute(
        self, cls: ClassInfo, attr: str, depth: int = 0, instance: Instance | None = None
    ) -> list[Instance] | None:
        """``self.<attr>`` of ``cls``: registered in ``__init__``, else a property/getter's result.

        With ``instance`` (the object ``self`` is), its constructor arguments are
        bound: ``Residual(nn.Sequential(...))`` makes ``self.fn`` that Sequential,
        ``Block(norm_layer=nn.GroupNorm)`` makes ``self.norm`` a GroupNorm.
        None when the class says nothing about ``attr``.
        """
        table = self.attr_table(cls, instance)
        if attr in table:
            return list(table[attr])
        prop = self.project.find_method(cls, attr)
        if prop is not None and _is_property(prop.node):
            out: list[Instance] = []
            env = self.env_of(prop.node, first_param(prop.node))
            for ret in env.returns:
                out.extend(self.instances_in(ret, Frame(prop.module, env, cls), depth + 1))
            return out
        if "*" in table and "." not in attr:
            return list(table["*"])  # registered under a computed name (``f"layer{i}"``)
        return None

    def all_children(self, cls: ClassInfo, fr: Frame, call: cst.Call, *, unnamed_only: bool = False) -> Instance:
        """``self.children()``: every module ``__init__`` registered, as one unordered container.

        ``unnamed_only``: for ``getattr(self, name)`` with a name not known here, leave out the modules
        registered under a name held in a ``self.<attr>`` (those are read back through that attribute).
        """
        seen: set[int] = set()
        elements: list[Instance] = []
        table = self.attr_table(cls, fr.instance)
        if unnamed_only and table.get("*"):
            # A computed name reads back what was registered under computed names (plugins added with
            # ``self.add_module(name, layer)`` in a loop), not the constant-named members beside them.
            table = {"*": table["*"]}
        for key, insts in table.items():
            if unnamed_only and key.startswith(GETATTR_KEY_PREFIX):
                continue
            for inst in insts:
                if id(inst) not in seen:
                    seen.add(id(inst))
                    elements.append(inst)
        return Instance(("torch.nn.Sequential",), None, fr.module, call, elements=tuple(elements), is_container=True, frame=fr)

    def as_sequential(self, inst: Instance) -> Instance:
        """``inst`` as the Sequential it is when its class subclasses one and has no forward of its own."""
        cls = inst.cls
        if cls is None or inst.is_container or not self._sequential_without_forward(cls):
            return inst
        init = self.project.find_method(cls, "__init__")
        members: list[Instance] = []
        ordered = True  # registration order is call order, when each registration is one known module
        dead: set[str] = set()
        if init is not None and inst.call is not None and inst.frame is not None:
            env = self.env_of(init.node, first_param(init.node))
            bound = _bind_construction(env, init.node, inst)
            fr = Frame(init.module, bound if bound is not None else env, init.cls, inst)
            dead = _dead_registrations(init.node, fr)
            for call in _super_init_calls(init.node):  # ``super().__init__(conv, bn, act)``
                found, exact, _ = self._elements(call.args, fr, 1)  # type: ignore[attr-defined]
                members.extend(found)
                ordered = ordered and exact
        seen = {id(m) for m in members}
        for key, insts in self.attr_table(cls, inst).items():
            if not key.startswith(GETATTR_KEY_PREFIX) and key not in dead:
                members.extend(m for m in insts if id(m) not in seen)
                seen.update(id(m) for m in insts)
                ordered = ordered and len(insts) == 1 and key != "*"
        if not members:
            return inst
        return replace(
            inst, qualnames=inst.qualnames + ("torch.nn.Sequential",), elements=tuple(members), is_container=True, ordered=ordered
        )

    def _sequential_without_forward(self, cls: ClassInfo) -> bool:
        if self.project.find_method(cls, "forward") is not None or self.project.find_method(cls, "__call__") is not None:
            return False
        bases = tuple(self.project.all_base_names(cls))
        return N.matches(bases, N.SEQUENTIAL_CLASSES) or N.matches(known.container_kind(bases), N.SEQUENTIAL_CLASSES)

    def constructed_with(self, cls: ClassInfo, param: str) -> list[Instance]:
        """Module objects the class's own file passes for ``__init__``'s ``param``
        (``CheckpointedLayer(Layer(d))`` for ``def __init__(self, module)``)."""
        init = cls.methods.get("__init__")
        if init is None:
            return []
        params = [p.name.value for p in (*init.params.posonly_params, *init.params.params)][1:]
        position = params.index(param) if param in params else None
        out: list[Instance] = []
        for node in walk(cls.module.module):
            if not (isinstance(node, cst.Call) and (dotted_name(node.func) or "").rsplit(".", 1)[-1] == cls.node.name.value):
                continue
            positional = [a.value for a in node.args if a.keyword is None and not a.star]
            value = next((a.value for a in node.args if a.keyword is not None and a.keyword.value == param), None)
            if value is None and position is not None and position < len(positional):
                value = positional[position]
            if value is not None:
                out.extend(self.instances_in(value, Frame(cls.module, None), 1))
        return out

    # -- per-class attribute tables ---------------------------------------------------

    def attr_table(self, cls: ClassInfo, instance: Instance | None = None) -> dict[str, list[Instance]]:
        """``self.<attr>`` -> the module objects ``__init__`` puts there (bases first).

        Modules registered under a computed name (``self.add_module(*stage)``,
        ``setattr(self, name, m)``) are kept under ``"*"``. With ``instance``,
        ``__init__`` runs with that object's constructor arguments bound.
        """
        if instance is not None:
            bound = self._instance_table(cls, instance)
            if bound is not None:
                return bound
        key = id(cls.node)
        table = self._attr_tables.get(key)
        if table is not None:
            return table
        table = {}
        self._attr_tables[key] = table  # guards recursion through self-referencing classes
        for base in reversed(list(self.project.base_classes(cls))):
            for name, insts in self.attr_table(base).items():
                table[name] = list(insts)
        init = cls.methods.get("__init__")
        if init is None:
            return table
        self._fill(table, cls, self.env_of(init, first_param(init)))
        return table

    def init_env(self, cls: ClassInfo, instance: Instance | None = None) -> tuple[ClassInfo, Env] | None:
        """The scope of the ``__init__`` that builds ``cls`` objects (bound to ``instance``'s arguments)."""
        init = self.project.find_method(cls, "__init__")
        if init is None or init.cls is None:
            return None
        env = self.env_of(init.node, first_param(init.node))
        if instance is None or instance.call is None or instance.frame is None:
            return init.cls, env
        key = _construction_key(init.node, instance)
        if key not in self._init_envs:
            self._init_envs[key] = _bind_construction(env, init.node, instance)
        return init.cls, self._init_envs[key] or env

    def _instance_table(self, cls: ClassInfo, instance: Instance) -> dict[str, list[Instance]] | None:
        """The table of one constructed object; None when its arguments change nothing."""
        init = cls.methods.get("__init__")
        if init is None or instance.call is None or instance.frame is None or instance.cls is not cls:
            return None
        key = _construction_key(cls.node, instance)
        if key in self._bound_tables:
            return self._bound_tables[key]
        self._bound_tables[key] = None  # recursion guard: the class table meanwhile
        env = _bind_construction(self.env_of(init, first_param(init)), init, instance)
        if env is None or self.budget <= 0:
            return None
        self.budget -= 1
        table = {name: list(insts) for name, insts in self.attr_table(cls).items() if name not in env.self_attrs}
        table.pop("*", None)
        self._fill(table, cls, env)
        self._bound_tables[key] = table
        return table

    def _fill(self, table: dict[str, list[Instance]], cls: ClassInfo, env: Env) -> None:
        """Evaluate what one ``__init__`` body registers on ``self`` into ``table``."""
        fr = Frame(cls.module, env, cls)
        for attr, exprs in env.self_attrs.items():
            found: list[Instance] = []
            for e in exprs:
                found.extend(self.instances_in(e, fr, 1))
            if found:
                table[attr] = found
        for attr, exprs in env.self_appended.items():
            extra: list[Instance] = []
            for e in exprs:
                extra.extend(self.instances_in(e, fr, 1))
            if extra:
                merged = [
                    replace(inst, elements=inst.elements + tuple(extra), ordered=False) if inst.is_container else inst
                    for inst in table.get(attr, [])
                ]
                table[attr] = merged or [
                    Instance(("torch.nn.ModuleList",), None, cls.module, None, elements=tuple(extra), is_container=True)
                ]
        dynamic: list[Instance] = []
        for e, star in env.dynamic_attrs:
            if star:
                for value, vfr in self.position_sources(e, fr, 1, 1):
                    dynamic.extend(self.instances_in(value, vfr, 1))
            else:
                dynamic.extend(self.instances_in(e, fr, 1))
        if dynamic:
            table["*"] = table.get("*", []) + dynamic


def _construction_key(node: cst.CSTNode, inst: Instance) -> tuple[int, ...]:
    """One constructed object's memo key: its class (or ``__init__``), call, scope and partial keywords."""
    assert inst.frame is not None
    return (id(node), id(inst.call), id(inst.frame.env), *(id(v) for _, v, _ in inst.preset))


def _bind_construction(env: Env, init: cst.FunctionDef, inst: Instance) -> Env | None:
    """``__init__``'s scope with the object's constructor call (and its ``partial`` keywords) bound."""
    assert inst.call is not None and inst.frame is not None
    return bind(env, init, inst.call, inst.frame, skip_self=True, preset=inst.preset)


def _dead_registrations(init: cst.FunctionDef, fr: Frame) -> set[str]:
    """Names ``__init__`` registers only in branches this object's arguments rule out
    (``if with_bn: self.add_module("bn", ...)`` built with ``with_bn=False``); a name also
    registered elsewhere (``else: self.add_module("bn", nn.Identity())``) stays."""
    ruled_out: set[str] = set()
    live: set[str] = set()
    for stmt in init.body.body:
        truth = truth_in(stmt.test, fr) if isinstance(stmt, cst.If) else None
        if truth is None:
            live.update(_registered_names(stmt))
            continue
        assert isinstance(stmt, cst.If)
        ruled_out.update(_registered_names(_arm(stmt, not truth)))
        live.update(_registered_names(stmt.body if truth else stmt.orelse))  # an ``elif`` chain may register it
    return ruled_out - live


def _arm(stmt: cst.If, taken: bool) -> cst.CSTNode | None:
    """The body (``taken``) or the ``else:`` body of ``stmt``; None for an ``elif`` chain or no ``else``."""
    if taken:
        return stmt.body
    return stmt.orelse.body if isinstance(stmt.orelse, cst.Else) else None


def _registered_names(node: cst.CSTNode | None) -> set[str]:
    """``self.add_module("bn", ...)`` / ``self.bn = ...`` names under ``node``."""
    out: set[str] = set()
    for n in walk(node) if node is not None else ():
        if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "add_module":
            if n.args and isinstance(n.args[0].value, cst.SimpleString):
                out.add(str(n.args[0].value.evaluated_value))
        elif isinstance(n, cst.AssignTarget) and isinstance(n.target, cst.Attribute):
            out.add(n.target.attr.value)
    return out


def _super_init_calls(init: cst.FunctionDef) -> list[cst.Call]:
    out: list[cst.Call] = []
    for stmt in init.body.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                call = small.value if isinstance(small, cst.Expr) else None
                if (
                    isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and call.func.attr.value == "__init__"
                    and isinstance(call.func.value, cst.Call) and dotted_name(call.func.value.func) == "super"
                ):
                    out.append(call)
    return out


def _is_property(node: cst.FunctionDef) -> bool:
    for dec in node.decorators:
        name = dotted_name(dec.decorator) or ""
        if name.rsplit(".", 1)[-1] in ("property", "cached_property"):
            return True
    return False
