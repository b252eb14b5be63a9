"""``graphopt serve``: serve a model base path over TF Serving's REST and gRPC APIs."""

import json
import logging

import click


@click.command("serve")
@click.argument("model_base", type=click.Path(file_okay=False))
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
    once,
    request_json,
):
    """Serve MODEL_BASE/<version>/saved_model.pb like TensorFlow Serving, graphopt's ops loaded.

    The newest version is served; a newer version directory appearing later is loaded and swapped
    in without dropping a request; deltas written to MODEL_BASE/<version>/deltas/ update its
    EmbeddingVariables live (docs/online.md). SIGINT or SIGTERM stops the server cleanly.
    """
    from graphopt.serve import ModelServer, demo_prediction, serve_until_signal

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
    server = ModelServer(
        model_base,
        model_name,
        host,
        rest_port,
        grpc_port,
        poll_seconds,
        delta_poll_seconds=delta_poll_seconds,
        **limits,
    )
    serve_until_signal(server, on_ready=click.echo)
