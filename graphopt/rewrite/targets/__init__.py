"""The rewrite targets by ``--target`` name. Adding a target: a folder under passes/, a line here."""

from graphopt.rewrite.passes import Target
from graphopt.rewrite.targets import ev, stock

TARGETS: dict[str, Target] = {t.name: t for t in (ev.TARGET, stock.TARGET)}
