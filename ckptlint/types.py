"""Values that cross module boundaries: findings, fixes, sites.

Lines are 1-based everywhere. Columns are 0-based inside ckptlint (as libcst
reports them) and become 1-based only in printed or serialised output.
Every value here is a frozen dataclass made of plain data, so it pickles
across worker processes and serialises to the cache as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Edit", "Finding", "Fix", "Site", "Applicability"]

Applicability = Literal["safe", "unsafe"]


@dataclass(frozen=True, order=True)
class Site:
    """Where a callable is put under checkpoint: ``path:line``."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, order=True)
class Edit:
    """Replace the source text between two positions with ``replacement``.

    ``start``/``end`` are (line 1-based, column 0-based); ``end`` is exclusive.
    An insertion has ``start == end``.
    """

    start_line: int
    start_column: int
    end_line: int
    end_column: int
    replacement: str


@dataclass(frozen=True)
class Fix:
    """A rewrite that removes a finding.

    ``safe`` fixes keep the program's meaning for every caller; ``unsafe``
    ones change behaviour a caller might rely on (say why in ``description``).
    """

    description: str
    applicability: Applicability
    edits: tuple[Edit, ...]


@dataclass(frozen=True)
class Finding:
    """One hazard (or tool problem) at one place in one file."""

    code: str
    message: str
    path: str
    line: int
    column: int  # 0-based
    end_line: int
    end_column: int  # 0-based, exclusive
    callable: str | None = None
    checkpoint_site: Site | None = None
    chain: tuple[str, ...] = ()
    fix: Fix | None = None
    # First and last line of the statement holding the finding: a suppression
    # comment on any of these lines applies.
    statement_lines: tuple[int, int] | None = None

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.path, self.line, self.column, self.code, self.message)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (internal columns kept 0-based); see ``from_dict``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Finding":
        site = data.get("checkpoint_site")
        fix = data.get("fix")
        lines = data.get("statement_lines")
        return cls(
            code=data["code"],
            message=data["message"],
            path=data["path"],
            line=data["line"],
            column=data["column"],
            end_line=data["end_line"],
            end_column=data["end_column"],
            callable=data.get("callable"),
            checkpoint_site=Site(**site) if site else None,
            chain=tuple(data.get("chain", ())),
            fix=(
                Fix(
                    description=fix["description"],
                    applicability=fix["applicability"],
                    edits=tuple(Edit(**e) for e in fix["edits"]),
                )
                if fix
                else None
            ),
            statement_lines=tuple(lines) if lines else None,  # type: ignore[arg-type]
        )

