"""The validation report: what was checked, what differed, and the verdict.

The human form is read top to bottom in a CI log: structure, then numerics per loader and
signature with one PASSED/FAILED line per output (details only under failures), then
behaviour differences (not failures), then one overall line. ``to_json`` carries everything.
"""

import dataclasses
import json


@dataclasses.dataclass
class CheckResult:
    """One structural check; ``findings`` say what is wrong, one line per cause."""

    name: str
    title: str
    passed: bool
    summary: str
    findings: list

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SignatureRun:
    """One signature run: the rewritten model through ``loader``, the original through ``reference``
    (the same loader, or tf.saved_model.load for a TF2 export: how its users load it)."""

    loader: str
    signature: str
    cases: list  # [(case name, rows or None)]
    outputs: list  # [OutputComparison]
    problems: list = dataclasses.field(default_factory=list)  # failures not tied to one output
    notes: list = dataclasses.field(default_factory=list)
    reference: str = ""  # the original's loader; empty: the same as ``loader``
    # When a failed run's loaders differ: the original under both loaders, and both models under
    # ``loader`` (output comparisons as dicts), which say whether the loader alone moves the outputs.
    baseline: dict | None = None

    def __post_init__(self):
        self.reference = self.reference or self.loader

    @property
    def where(self):
        """``loader signature``, with the original's loader where it is another."""
        against = "" if self.reference == self.loader else f" (original: {self.reference})"
        return f"{self.loader} {self.signature}{against}"

    @property
    def passed(self):
        return not self.problems and all(o.passed for o in self.outputs)

    def to_dict(self):
        return {
            "loader": self.loader,
            "original_loader": self.reference,
            "signature": self.signature,
            "passed": self.passed,
            "cases": [{"name": n, "rows": r} for n, r in self.cases],
            "outputs": [o.to_dict() for o in self.outputs],
            "problems": list(self.problems),
            "notes": list(self.notes),
            "loader_baseline": self.baseline,
        }


@dataclasses.dataclass
class OovProbe:
    """What both models do with an id outside the original table: a behaviour, not a verdict."""

    signature: str
    input: str
    id: int
    valid: str  # the valid range, described
    original: str
    rewritten: str
    same: bool  # both give the same outputs (or the same error)

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ValidationReport:
    original: str
    rewritten: str
    tolerance: object  # Tolerance
    loaders: list
    inputs: dict = dataclasses.field(default_factory=dict)  # signature -> InputPlan
    checks: list = dataclasses.field(default_factory=list)
    runs: list = dataclasses.field(default_factory=list)
    problems: list = dataclasses.field(
        default_factory=list
    )  # e.g. a loader that cannot load the rewritten model
    oov: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    # A compressed rewrite (rewrite --row-dtype): its row dtype, each table's rows against their
    # bound, and with --data the ROC AUC change of each binary output (graphopt.validate.compression).
    compression: dict | None = None

    @property
    def passed(self):
        return not self.problems and all(c.passed for c in self.checks) and all(r.passed for r in self.runs)

    def failures(self):
        """One line per failed check, output or problem: the causes, for a short summary."""
        lines = list(self.problems)
        for c in self.checks:
            if not c.passed:
                lines += [f"{c.name}: {f}" for f in c.findings] or [f"{c.name}: failed"]
        for r in self.runs:
            where = r.where
            lines += [f"{where}: {p}" for p in r.problems]
            for o in r.outputs:
                if not o.passed:
                    lines += [f"{where} output {o.name!r}: {p}" for p in o.problems]
                    if o.mismatches:
                        lines.append(
                            f"{where} output {o.name!r}: {o.mismatches} of {o.elements} elements "
                            f"differ{_worst_text(o)}"
                        )
        return lines

    def to_dict(self):
        return {
            "passed": self.passed,
            "original": self.original,
            "rewritten": self.rewritten,
            "tolerance": {
                "atol": self.tolerance.atol,
                "rtol": self.tolerance.rtol,
                "exact": self.tolerance.exact,
                "rule": self.tolerance.describe(),
            },
            "loaders": list(self.loaders),
            "inputs": {name: _plan_dict(plan) for name, plan in self.inputs.items()},
            "structure": [c.to_dict() for c in self.checks],
            "numerics": [r.to_dict() for r in self.runs],
            "problems": list(self.problems),
            "behaviour_differences": [p.to_dict() for p in self.oov],
            "notes": list(self.notes),
            **({"compression": self.compression} if self.compression is not None else {}),
            "failures": self.failures(),
        }

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent)

    def format(self):
        """The human report."""
        out = [
            "graphopt validate",
            f"  original:  {self.original}",
            f"  rewritten: {self.rewritten}",
            f"  tolerance: {self.tolerance.describe()}",
            f"  loaders:   {', '.join(self.loaders)}",
            "",
            "Structure",
        ]
        for c in self.checks:
            out.append(f"  [{_verdict(c.passed)}] {c.title}" + (f": {c.summary}" if c.summary else ""))
            out += [f"      {f}" for f in c.findings]
        for p in self.problems:
            out.append(f"  [FAILED] {p}")
        if self.inputs:
            out += ["", "Inputs"]
            shown = {}  # signatures whose inputs are described the same way are listed once
            for name, plan in self.inputs.items():
                source = (
                    "generated from the signature" if plan.source == "generated" else f"rows of {plan.source}"
                )
                key = (source, tuple(plan.inputs.items()))
                if key in shown:
                    out.append(f"  {name}: the same inputs as {shown[key]}")
                    continue
                shown[key] = name
                out.append(f"  {name} ({source})")
                width = max(len(k) for k in plan.inputs) if plan.inputs else 0
                out += [f"    {k:<{width}}  {text}" for k, text in plan.inputs.items()]
        out += ["", "Numerics"]
        if not self.runs:
            out.append("  (nothing was run)")
        for r in self.runs:
            cases = ", ".join(n if rows is None else f"{n} x{rows}" for n, rows in r.cases)
            against = "" if r.reference == r.loader else f"against the original's {r.reference} load; "
            out.append(f"  {r.loader} / {r.signature}  ({against}{len(r.cases)} cases: {cases})")
            for p in r.problems:
                out.append(f"    [FAILED] {p}")
            for o in r.outputs:
                out += _output_lines(o)
            out += [f"    note: {n}" for n in r.notes]
        if self.oov:
            out += ["", "Behaviour differences (reported, not failures): ids outside the original table"]
            for p in self.oov:
                mark = "same" if p.same else "differs"
                out.append(f"  {p.signature} / {p.input} = {p.id} (valid {p.valid}): {mark}")
                out.append(f"      original:  {p.original}")
                out.append(f"      rewritten: {p.rewritten}")
        if self.compression is not None:
            out += ["", f"Compression ({self.compression['row_dtype']} rows; reported either way)"]
            for t in self.compression["tables"]:
                out.append(
                    f"  {t['name']}: {t['rows']} {t['row_dtype']} rows, {t['rows_out_of_bound']} outside "
                    f"the bound; max |row - stored row| {t['max_abs_error']:.3g} "
                    f"({t['max_error_over_bound']:.3f}x the bound)"
                )
            for r in self.runs:
                for o in r.outputs:
                    out.append(
                        f"  {r.loader} / {r.signature} output {o.name!r}: max |diff| {o.max_abs_diff:.3g}, "
                        f"mean |diff| {o.mean_abs_diff:.3g}"
                    )
            for a in self.compression["auc"]:
                out.append(
                    f"  {a['loader']} / {a['signature']} output {a['output']!r}: ROC AUC "
                    f"{a['original_auc']:.5f} -> {a['rewritten_auc']:.5f} (change {a['delta_auc']:+.5f}, "
                    f"{a['rows']} rows)"
                )
        if self.notes:
            out += ["", "Notes"] + [f"  {n}" for n in self.notes]
        out.append("")
        out.append(self._overall_line())
        return "\n".join(out)

    def _overall_line(self):
        outputs = [o for r in self.runs for o in r.outputs]
        n_checks = sum(c.passed for c in self.checks)
        n_outputs = sum(o.passed for o in outputs)
        counts = (
            f"{n_checks}/{len(self.checks)} structural checks, {n_outputs}/{len(outputs)} outputs "
            f"within tolerance ({self.tolerance.describe().split(' (')[0]})"
        )
        if self.passed:
            return f"PASSED: {counts}"
        return f"FAILED: {counts}; {len(self.failures())} failure(s) listed above"


def _verdict(passed):
    return "PASSED" if passed else "FAILED"


def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x) if isinstance(x, str) else str(x)


def _worst_text(o):
    w = o.worst
    if w is None:
        return ""
    diff = "" if w.abs_diff is None else f", |diff| {_fmt(w.abs_diff)}"
    return (
        f"; worst at case {w.case} index {list(w.index)}: original {_fmt(w.original)}, "
        f"rewritten {_fmt(w.rewritten)}{diff}"
    )


def _output_lines(o):
    dtype = (
        o.original_dtype
        if o.original_dtype == o.rewritten_dtype
        else f"{o.original_dtype} vs {o.rewritten_dtype}"
    )
    head = f"    [{_verdict(o.passed)}] {o.name}"
    if o.cases:
        head += f"  {dtype}, {o.elements} elements"
    if o.passed:
        if o.max_abs_diff:
            head += f", max abs diff {_fmt(o.max_abs_diff)} (within tolerance)"
        else:
            head += ", identical" if o.original_dtype and o.elements else ""
        return [head]
    lines = [head]
    lines += [f"        {p}" for p in o.problems]
    if o.mismatches:
        rate = 100.0 * o.mismatches / o.elements if o.elements else 0.0
        lines.append(f"        mismatches: {o.mismatches} of {o.elements} elements ({rate:.3g}%)")
        if o.original_dtype != "string":
            lines.append(
                f"        abs diff: max {_fmt(o.max_abs_diff)}, mean {_fmt(o.mean_abs_diff)};  "
                f"rel diff: max {_fmt(o.max_rel_diff)}, mean {_fmt(o.mean_rel_diff)}"
            )
        lines.append(f"        worst{_worst_text(o)[len('; worst') :]}")
        if o.original_dtype != "string":
            lines.append(
                f"        would pass with: atol >= {_fmt(o.max_abs_diff)} (rtol=0) "
                f"or rtol >= {_fmt(o.max_rel_diff)} (atol=0)"
            )
    return lines


def _plan_dict(plan):
    return {
        "source": plan.source,
        "id_ranges": {
            k: {"low": r.low, "high": r.high, "source": r.source} for k, r in plan.id_ranges.items()
        },
        "inputs": dict(plan.inputs),
    }
