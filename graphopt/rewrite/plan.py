"""RewritePlan: which tables become EmbeddingVariables, and the state the passes share while rewriting."""

import dataclasses
import re

from graphopt.analysis.tables import TableCandidate
from graphopt.graph.model import ModelGraph


@dataclasses.dataclass
class RewritePlan:
    """The tables to convert (and those skipped, with the reason)."""

    tables: list[TableCandidate]
    skipped: list[tuple[TableCandidate, str]]
    # Collisionless migration (rewrite --collisionless): one TableMigration per chosen table;
    # empty when not asked for. Only tables whose migration is possible are migrated.
    migrations: list = dataclasses.field(default_factory=list)
    # What the output cannot do that the input could (one line each, naming the part and why).
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def select(
        cls,
        tables: list[TableCandidate],
        include: str | None = None,
        exclude: str | None = None,
        min_rows: int = 0,
    ) -> "RewritePlan":
        """Applies --include / --exclude (regexes searched in the table name) and --min-rows."""
        chosen, skipped = [], []
        for t in tables:
            if t.training_left:
                skipped.append((t, f"training path left as is: {t.training_left}"))
            elif include and not re.search(include, t.name):
                skipped.append((t, f"name does not match --include {include}"))
            elif exclude and re.search(exclude, t.name):
                skipped.append((t, f"name matches --exclude {exclude}"))
            elif t.rows < min_rows:
                skipped.append((t, f"{t.rows} rows < --min-rows {min_rows}"))
            else:
                chosen.append(t)
        # Tables sharing a function argument go together or not at all.
        changed = True
        while changed:
            changed = False
            handles = {h for t in chosen for h in t.handles}
            for t in list(chosen):
                missing = sorted(set(t.shares_arguments_with) - handles)
                if missing:
                    chosen.remove(t)
                    skipped.append(
                        (t, f"shares a function argument with {missing[0]}, which is not selected")
                    )
                    changed = True
        return cls(chosen, skipped)

    def to_dict(self) -> dict:
        out: dict = {
            "tables": [t.to_dict() for t in self.tables],
            "skipped": [{"name": t.name, "reason": r} for t, r in self.skipped],
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if self.migrations:
            out["collisionless"] = [m.to_dict() for m in self.migrations]
        return out


@dataclasses.dataclass
class Replacement:
    """One manifest entry: a node replaced (or removed) by the rewrite."""

    body: str
    old_name: str
    old_op: str
    new_name: str | None
    new_op: str | None
    table: str
    pass_name: str

    def to_dict(self) -> dict:
        return {
            "function": self.body or None,
            "old": {"name": self.old_name, "op": self.old_op},
            "new": {"name": self.new_name, "op": self.new_op} if self.new_name else None,
            "table": self.table,
            "pass": self.pass_name,
        }


@dataclasses.dataclass
class RewriteContext:
    """What the passes share: the model being edited, the plan, the manifest, nodes left disconnected."""

    model: ModelGraph
    plan: RewritePlan
    replacements: list[Replacement] = dataclasses.field(default_factory=list)
    disconnected: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (body, node) to clean

    def replaced(self, body, old, new, table, pass_name):
        """Records that node ``old`` (a NodeDef before the edit) became ``new`` (a NodeDef or None)."""
        self.replacements.append(
            Replacement(
                body,
                old.name,
                old.op,
                new.name if new is not None else None,
                new.op if new is not None else None,
                table.name,
                pass_name,
            )
        )
