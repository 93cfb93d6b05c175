"""`Problem`: one finding of the linter, naming the node, the rule and the document the rule comes from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kdforge.export.lint.rules import RULES
from kdforge.export.lint.sources import SOURCES


@dataclass(frozen=True)
class Problem:
    """A node (or the model, when `node` is empty) that breaks rule `rule` of the target runtime."""

    rule: str
    severity: str  # "error", "warning" or "info" (rules.SEVERITIES)
    node: str  # node name, "#<index>" when the node has none; "" for the model as a whole
    op_type: str  # "" for the model as a whole
    message: str
    source: str  # document, version and date the rule is taken from (sources.RuleSource.cite)
    url: str

    @property
    def where(self) -> str:
        """'node NAME (OpType)' or 'model'."""
        return f"node {self.node} ({self.op_type})" if self.node else "model"

    def line(self) -> str:
        """One line: severity, rule id, where, what, and the source in brackets."""
        return f"{self.severity:<7} {self.rule:<31} {self.where}: {self.message} [{self.source}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_problem(
    rule_id: str, message: str, node: str = "", op_type: str = "", source: str | None = None
) -> Problem:
    """A Problem of rule `rule_id` with the rule's severity and source (or `source`, a sources key)."""
    rule = RULES[rule_id]
    document = SOURCES[source or rule.source]
    return Problem(rule.id, rule.severity, node, op_type, message, document.cite, document.url)
