"""The rewrite targets by ``--target`` name. Adding a target: a folder under passes/, a line here."""

from typing import Dict

from graphopt.rewrite.passes import Target
from graphopt.rewrite.passes import ev, stock

TARGETS: Dict[str, Target] = {t.name: t for t in (ev.TARGET, stock.TARGET)}
