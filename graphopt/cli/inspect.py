"""``graphopt inspect``: list a model's signatures, embedding tables and the gathers left alone."""

import json

import click

from graphopt.cli.options import json_option, tags_option, tensorboard_option


def _format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def format_inspection(report) -> str:
    """The human-readable inspect report."""
    lines = [f"{report.path} ({report.kind}, tags {','.join(report.tags) or '-'})", "signatures:"]
    for name, sig in sorted(report.signatures.items()):
        ins = ", ".join(f"{k}:{v['dtype']}{v['shape']}" for k, v in sorted(sig["inputs"].items()))
        lines.append(f"  {name}({ins}) -> {', '.join(sig['outputs'])}")
    lines.append(f"embedding tables: {len(report.tables)}")
    for t in report.tables:
        part = f", {len(t.handles)} parts ({t.partition_strategy})" if t.partition_strategy else ""
        lines.append(f"  {t.name}: [{t.rows}, {t.dim}] {t.dtype}, {_format_bytes(t.nbytes)}{part}")
        lines.append(f"    fed by: {', '.join(t.signature_inputs) or '-'}")
        for s in t.sites:
            lines.append(f"    gathered at {s.where} ({s.op})")
        migration = report.migration(t.name)
        if migration is not None:
            lines.append(f"    {migration.line}")
    lines.append(f"gathers left alone: {len(report.left_alone)}")
    for g in report.left_alone:
        lines.append(f"  {g.where} ({g.op}): {g.reason}")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("model", type=click.Path())
@tags_option
@tensorboard_option
@json_option
def inspect(model, tags, tensorboard, as_json):
    """List MODEL's signatures, embedding tables and the gathers left alone."""
    from graphopt.cli.migrate import format_analysis, source_analysis
    from graphopt.rewrite import inspect_model, write_tensorboard

    analysis = source_analysis(model, tags)
    if analysis is not None:
        click.echo(json.dumps(analysis.to_dict(), indent=2) if as_json else format_analysis(analysis))
        return
    report = inspect_model(model, tags=tags)
    if tensorboard:
        write_tensorboard(model, tensorboard, tags=tags)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_inspection(report))
