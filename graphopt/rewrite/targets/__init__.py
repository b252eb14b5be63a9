"""The rewrite targets by ``--target`` name. Adding a target: a package here, a line in TARGETS."""

from graphopt.rewrite.target import Target
from graphopt.rewrite.targets import ev, stock

TARGETS: dict[str, Target] = {t.name: t for t in (ev.TARGET, stock.TARGET)}


def default_passes() -> list:
    """The serving rewrite onto EmbeddingVariables (the ev target's passes), in order."""
    return TARGETS["ev"].passes()
