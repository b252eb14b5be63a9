"""The lookup sites a target's lookup pass rewrites, shared by every target."""


def distinct_lookup_sites(ctx):
    """(table, LookupSite) once per gather node.

    Tables passed through one function argument share its gather: it is rewritten once (the plan
    lets such tables through only together).
    """
    seen, out = set(), []
    for t in ctx.plan.tables:
        for s in t.sites:
            if (s.body, s.node) not in seen:
                seen.add((s.body, s.node))
                out.append((t, s))
    return out
