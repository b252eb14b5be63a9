"""Plain-HTTP calls (urllib) to a server's REST API, returning (status, parsed JSON)."""

import json
import urllib.error
import urllib.request

import numpy as np


def call(server, path, body=None, raw=None, timeout=30):
    """GET (no body) or POST ``body`` as JSON (or ``raw`` bytes) to ``path`` under the server's URL."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(server.rest_url + path, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def predict(server, body, version=None, model=None):
    """POST a predict body to /v1/models/NAME[/versions/V]:predict."""
    path = f"/v1/models/{model or server.name}"
    if version is not None:
        path += f"/versions/{version}"
    return call(server, path + ":predict", body)


def assert_answers_correctly(server, version_path, seed, rows=3, row_format=False):
    """A predict of fresh inputs (from ``seed``) answered exactly as a direct call of the model answers."""
    from tests.serve.serve_models import direct_call, rec_inputs, rest_columns, rest_rows

    inputs = rec_inputs(rows, seed=seed)
    status, reply = predict(server, rest_rows(inputs) if row_format else rest_columns(inputs))
    assert status == 200, reply
    answer = np.asarray(reply["predictions" if row_format else "outputs"], np.float32)
    np.testing.assert_array_equal(answer, direct_call(version_path, inputs)["output_0"])
