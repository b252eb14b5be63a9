"""Continue training a converted ``.keras`` model on new data: the loop `make demo` shows.

    python -m graphopt.course.train model_ev.keras -o trained.keras --export serving/1 \\
        [--export-converted converted/] [--data new.csv | --rows 4000 --seed 7 --new-users]

Loads the model (DynamicEmbedding layers restore their rows and slots), exports it as it is
(``--export-converted``: what ``graphopt validate`` compares with the original export), trains
one epoch on the new samples with ``model.fit``, saves the ``.keras`` file and exports the
trained model for ``graphopt serve``. ``--new-users`` gives the synthetic samples user ids past
the course's vocabulary, so every one of them is a new id that gets its own row.
"""

import argparse
import sys

from graphopt.errors import GraphoptError


def continue_training(
    model_path,
    out,
    export,
    export_converted=None,
    data=None,
    rows=4000,
    seed=7,
    new_users=False,
    row_dtype="float32",
):
    from graphopt.course.data import ID_FEATURES, generate_samples, read_samples
    from graphopt.course.models.features import dataset
    from graphopt.keras import DynamicEmbedding
    from graphopt.keras.convert import load_keras_file
    from graphopt.online import export_model

    model = load_keras_file(model_path)
    tables = [layer for layer in model.layers if isinstance(layer, DynamicEmbedding)]
    if export_converted:
        export_model(model, export_converted)
    samples = read_samples(data) if data else generate_samples(rows, seed=seed)
    if new_users and not data:
        samples.columns["userId"] = samples.columns["userId"] + ID_FEATURES["userId"]
    before = {layer.name: int(layer.table.size()) for layer in tables}
    # Rows trained here get last steps after this one: a delta for the version served before
    # takes the rows after it (graphopt delta --since STEP).
    since = max([int(layer.iterations.numpy()) for layer in tables] or [0])
    history = model.fit(dataset(samples, shuffle=True, seed=seed), epochs=1, verbose=0)
    model.save(out)
    # --export-row-dtype: compressed serving rows; the tables file names the tables for deltas
    export_model(model, export, row_dtype)
    loss = history.history["loss"][-1]
    print(f"trained 1 epoch on {len(samples)} new samples ({samples.source}): loss {loss:.4f}")
    for layer in tables:
        print(f"  {layer.name}: {before[layer.name]} -> {int(layer.table.size())} rows")
    print(f"saved {out}; exported {export}")
    print(f"the tables were at step {since} before this training: graphopt delta ... --since {since}")
    return since


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m graphopt.course.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model")
    parser.add_argument("-o", "--output", required=True, help="the trained .keras file")
    parser.add_argument("--export", required=True, help="SavedModel of the trained model")
    parser.add_argument("--export-converted", help="SavedModel of the model before training")
    parser.add_argument("--data", help="samples CSV in the course's format (default: synthetic)")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--new-users", action="store_true")
    parser.add_argument(
        "--export-row-dtype",
        choices=("float32", "int8", "float16", "bfloat16"),
        default="float32",
        help="how the --export SavedModel stores its tables' rows (compressed: serving only)",
    )
    args = parser.parse_args(argv)
    try:
        from graphopt.ops.library import load_library

        load_library()  # TensorFlow and the ops, before the model is read

        continue_training(
            args.model,
            args.output,
            args.export,
            args.export_converted,
            args.data,
            args.rows,
            args.seed,
            args.new_users,
            args.export_row_dtype,
        )
    except GraphoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
