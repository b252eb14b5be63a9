"""One rewrite pass per module; the order they run in is pipeline.default_passes()."""
