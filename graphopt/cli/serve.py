"""``graphopt serve``: serve a model base path over TF Serving's REST and gRPC APIs."""

import json
import logging

import click


@click.command("serve")
@click.argument("model_base", type=click.Path(file_okay=False), required=False)
@click.option(
    "--model-name", help="Name clients address the model by.  [default: MODEL_BASE's directory name]"
)
@click.option("--rest-port", type=int, default=8501, show_default=True, help="REST port (0: any free port).")
@click.option("--grpc-port", type=int, default=8500, show_default=True, help="gRPC port (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--poll-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="How often MODEL_BASE is checked for a new version.",
)
@click.option(
    "--delta-poll-seconds",
    type=float,
    default=0.2,
    show_default=True,
    help="How often the served version's deltas/ folder is checked for new deltas (at most --poll-seconds).",
)
@click.option(
    "--max-body-bytes",
    type=int,
    default=16 * 1024 * 1024,
    show_default=True,
    help="Largest request accepted (REST body, gRPC message).",
)
@click.option(
    "--max-request-elements",
    type=int,
    default=1 << 24,
    show_default=True,
    help="Most tensor elements one request's inputs may hold (REST and gRPC), checked before they are built.",
)
@click.option(
    "--read-timeout-seconds",
    type=float,
    default=10.0,
    show_default=True,
    help="REST: time a client has to send a whole request, and to start the next one on a "
    "kept-alive connection.",
)
@click.option(
    "--max-connections",
    type=int,
    default=512,
    show_default=True,
    help="REST: most open connections; more are answered 503.",
)
@click.option(
    "--model-config-file",
    type=click.Path(dir_okay=False),
    help="Serve the models of this TF Serving ModelServerConfig text file instead of MODEL_BASE "
    "(several models, version policies, version labels).",
)
@click.option(
    "--model-config-file-poll-wait-seconds",
    "config_poll_seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="How often --model-config-file is re-read; a changed file is applied (0: never).",
)
@click.option(
    "--enable-batching",
    is_flag=True,
    help="Merge concurrent predict requests for the same version and signature into batches.",
)
@click.option(
    "--batching-parameters-file",
    type=click.Path(dir_okay=False),
    help="With --enable-batching: TF Serving BatchingParameters text file (max_batch_size, "
    "batch_timeout_micros, ...).  [default: TF Serving's defaults]",
)
@click.option(
    "--watcher-nice",
    type=int,
    default=10,
    show_default=True,
    help="Nice increment of the thread that loads versions and applies deltas (0: none), so "
    "requests win the cores while it works.",
)
@click.option(
    "--no-metrics",
    is_flag=True,
    help="Do not serve Prometheus metrics at /monitoring/prometheus/metrics on the REST port.",
)
@click.option(
    "--once", "once", is_flag=True, help="Start, make one REST predict call, print it, and stop (a demo)."
)
@click.option(
    "--request",
    "request_json",
    help="With --once: the predict body to send, as JSON.  [default: one example of zeros]",
)
def serve(
    model_base,
    model_name,
    rest_port,
    grpc_port,
    host,
    poll_seconds,
    delta_poll_seconds,
    max_body_bytes,
    max_request_elements,
    read_timeout_seconds,
    max_connections,
    model_config_file,
    config_poll_seconds,
    enable_batching,
    batching_parameters_file,
    watcher_nice,
    no_metrics,
    once,
    request_json,
):
    """Serve MODEL_BASE/<version>/saved_model.pb like TensorFlow Serving, graphopt's ops loaded.

    Or serve the models of a --model-config-file (then no MODEL_BASE).

    The newest version is served; a newer version directory appearing later is loaded and swapped
    in without dropping a request; deltas written to MODEL_BASE/<version>/deltas/ update its
    EmbeddingVariables live (docs/online.md). SIGINT or SIGTERM stops the server cleanly.
    """
    from graphopt.errors import ArgumentError

    if (model_base is None) == (model_config_file is None):
        raise ArgumentError("give MODEL_BASE or --model-config-file (one of them)")
    if batching_parameters_file and not enable_batching:
        raise ArgumentError("--batching-parameters-file is used only with --enable-batching; add it")
    if once and model_config_file:
        raise ArgumentError("--once serves MODEL_BASE; give MODEL_BASE instead of --model-config-file")

    from graphopt.serve import ModelServer, demo_prediction, serve_until_signal
    from graphopt.serve.batching import default_batching_parameters, read_batching_parameters

    # graphopt's own progress lines only; TensorFlow's loggers keep their quiet defaults
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("graphopt serve: %(message)s"))
    logger = logging.getLogger("graphopt")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    limits = dict(
        max_body_bytes=max_body_bytes,
        max_request_elements=max_request_elements,
        read_timeout=read_timeout_seconds,
        max_connections=max_connections,
    )
    if once:
        name, sent, reply = demo_prediction(model_base, model_name, host, request_json, **limits)
        click.echo(f"POST /v1/models/{name}:predict {json.dumps(sent)}")
        click.echo(json.dumps(reply))
        return
    batching = None
    if enable_batching:
        batching = (
            read_batching_parameters(batching_parameters_file)
            if batching_parameters_file
            else default_batching_parameters()
        )
    server = ModelServer(
        model_base,
        model_name,
        host,
        rest_port,
        grpc_port,
        poll_seconds,
        delta_poll_seconds=delta_poll_seconds,
        model_config_file=model_config_file,
        config_poll_seconds=config_poll_seconds,
        batching=batching,
        metrics=not no_metrics,
        watcher_nice=watcher_nice,
        **limits,
    )
    serve_until_signal(server, on_ready=click.echo)
