"""The model zoo, model x check: what graphopt does with the models users already have.

Builds every zoo model (tests.zoo.builders: DeepCTR, TensorFlow Recommenders, keras-rs, Keras 3,
each with its library's defaults, trained a few steps, saved as its users save), then runs each
check of tests.zoo.checks on it, in one process (tf_keras reloads in one subprocess
with TF_USE_LEGACY_KERAS=1), and prints the table and the headline:

    zoo: M/N models exact | tables found F/R | collisionless migrated C/H hashed tables | fit after reload K/L

A model is exact when its ev and stock rewrites validate exactly, an independent
tf.saved_model.load of both is bit-identical, and the out-of-vocabulary batch passes.

    python bench/zoo.py --quick              # builds into a temporary folder
    python bench/zoo.py --quick --zoo-dir D  # reuses (or builds into) D
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.zoo import builders as zoo  # noqa: E402
from tests.zoo import checks  # noqa: E402

COLUMNS = ("tables", "ev", "stock", "load", "oov", "collisionless", "fit after reload")


def _cell(check) -> str:
    if check is None:
        return "-"
    return "yes" if check else "NO"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="the zoo as the test suite builds it (the only size)"
    )
    parser.add_argument("--zoo-dir", help="where the zoo is built (kept); default: a temporary folder")
    parser.add_argument("--only", nargs="*", help="zoo model names (default: all)")
    args = parser.parse_args(argv)
    start = time.time()
    root = args.zoo_dir or tempfile.mkdtemp(prefix="graphopt-zoo-")
    names = args.only or [e.name for e in zoo.ZOO]
    folders = zoo.build_all(root, names)
    built = time.time()
    out_root = tempfile.mkdtemp(prefix="graphopt-zoo-out-")
    rows: dict[str, dict] = {}
    details: list[str] = []
    found = expected = migrated = hashed = 0
    tf_keras_pairs = []
    for name in names:
        folder, entry = folders[name], zoo.BY_NAME[name]
        row: dict = {}
        row["tables"], f, r = checks.tables_found(folder)
        found, expected = found + f, expected + r
        ev = os.path.join(out_root, f"{name}_ev")
        row["ev"], _ = checks.rewrite_exact(folder, ev)
        row["stock"], _ = checks.rewrite_exact(
            folder, os.path.join(out_root, f"{name}_stock"), target="stock"
        )
        row["load"] = checks.load_exact(folder, ev) if row["ev"] else checks.Check(False, "no rewrite")
        row["oov"] = checks.oov(folder, ev) if row["ev"] else checks.Check(False, "no rewrite")
        row["collisionless"] = None
        if entry.hashed:
            row["collisionless"], c, h = checks.collisionless(folder, os.path.join(out_root, f"{name}_cl"))
            migrated, hashed = migrated + c, hashed + h
        row["fit after reload"] = None
        if entry.reloads == "keras":
            row["fit after reload"] = checks.keras_fit_after_reload(
                folder, os.path.join(out_root, f"{name}.keras")
            )
        elif entry.reloads == "tf_keras" and row["ev"]:
            tf_keras_pairs.append((name, folder, ev))
        elif entry.reloads == "tf_keras":
            row["fit after reload"] = checks.Check(False, "no rewrite")
        rows[name] = row
    if tf_keras_pairs:
        results = checks.tf_keras_fit_after_reload([(f, ev) for _, f, ev in tf_keras_pairs])
        for name, folder, _ in tf_keras_pairs:
            rows[name]["fit after reload"] = results[folder]

    width = max(len(n) for n in names)
    print(f"{'model':{width}}  " + "  ".join(f"{c:>{max(len(c), 3)}}" for c in COLUMNS))
    for name in names:
        cells = [_cell(rows[name][c]) for c in COLUMNS]
        print(
            f"{name:{width}}  "
            + "  ".join(f"{v:>{max(len(c), 3)}}" for v, c in zip(cells, COLUMNS, strict=True))
        )
        for c in COLUMNS:
            check = rows[name][c]
            if check is not None:
                details.append(f"  {name} / {c}: {'ok' if check else 'FAILED'}: {check.detail}")
    print("\ndetails:")
    print("\n".join(details))
    exact = sum(1 for n in names if all(rows[n][c] for c in ("ev", "stock", "load", "oov")))
    fits = [rows[n]["fit after reload"] for n in names if rows[n]["fit after reload"] is not None]
    print(f"\nbuild {built - start:.0f} s, checks {time.time() - built:.0f} s")
    print(
        f"zoo: {exact}/{len(names)} models exact | tables found {found}/{expected} | "
        f"collisionless migrated {migrated}/{hashed} hashed tables | "
        f"fit after reload {sum(1 for c in fits if c)}/{len(fits)}"
    )


if __name__ == "__main__":
    main()
