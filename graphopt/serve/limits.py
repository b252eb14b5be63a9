"""What one request may ask of the server: the elements its input tensors hold, JSON nesting depth.

A request's byte size is capped by --max-body-bytes, but a TensorProto's shape can claim far more
elements than its bytes carry (TensorFlow pads a short value list with its last value), and the
model's work grows with the elements too: the element cap is checked before any array is built.
"""

import re

import numpy as np

from graphopt.serve.errors import BadRequest

DEFAULT_MAX_REQUEST_ELEMENTS = 1 << 24
MAX_JSON_DEPTH = 400

_ESCAPED_CHARACTER = re.compile(rb"\\.", re.DOTALL)


class ElementBudget:
    """Counts the elements a request's inputs claim against the server's per-request cap."""

    def __init__(self, limit):
        self.limit = limit
        self.claimed = 0

    def claim(self, name, count, shape):
        """Add ``count`` elements of input ``name`` (of ``shape``); BadRequest past the cap."""
        self.claimed += count
        if self.claimed > self.limit:
            raise BadRequest(
                f"input {name!r} of shape {list(shape)} brings the request to {self.claimed} elements, "
                f"over the server's limit of {self.limit} per request (--max-request-elements); "
                "send fewer examples per request"
            )


def check_json_depth(body, limit=MAX_JSON_DEPTH):
    """BadRequest if the JSON text ``body`` nests arrays/objects deeper than ``limit``.

    Checked on the raw bytes, without recursion, before the (recursive) JSON parser sees them:
    escaped characters are cut out, so each remaining quote opens or closes a string, and the
    brackets outside strings are the structure: the same strings the parser sees, so it never
    recurses deeper than the depth counted here.
    """
    if b"\\" in body:
        body = _ESCAPED_CHARACTER.sub(b"", body)
    codes = np.frombuffer(body, np.uint8)
    inside_string = np.bitwise_xor.accumulate((codes == ord('"')).view(np.uint8))
    opens = (codes == ord("[")) | (codes == ord("{"))
    brackets = (opens | (codes == ord("]")) | (codes == ord("}"))) & (inside_string == 0)
    steps = opens[brackets].astype(np.int32) * 2 - 1
    depth = int(np.cumsum(steps, dtype=np.int32).max(initial=0))
    if depth > limit:
        raise BadRequest(
            f"the JSON body nests {depth} levels deep, more than the {limit} accepted; flatten it"
        )
