"""Loading the op library: once, and with a clear error when it cannot be used."""

import json
import os
import shutil

import pytest

from graphopt.errors import GraphoptError, OpLibraryError
from graphopt.ops import library


def test_loads_once():
    assert library.load_library() is library.load_library()


def _load_uncached(monkeypatch, path):
    monkeypatch.setenv(library.LIBRARY_ENV, path)
    return library.load_library.__wrapped__()


def test_missing_library_says_how_to_rebuild(monkeypatch, tmp_path):
    with pytest.raises(OpLibraryError, match="missing.*make install"):
        _load_uncached(monkeypatch, str(tmp_path / "_graphopt_ops.so"))


@pytest.mark.parametrize(
    "info, message",
    [
        ({"tensorflow_version": "2.15.0"}, "built for TensorFlow 2.15.0 but TensorFlow 2"),
        ({"tensorflow_version": "__current__", "sanitize": "address"}, "LD_PRELOAD"),
        (None, "_build_info.json is missing"),
    ],
)
def test_unusable_build_is_refused_before_loading(monkeypatch, tmp_path, info, message):
    import tensorflow as tf

    copy = tmp_path / "_graphopt_ops.so"
    shutil.copyfile(library.library_path(), copy)
    if info is not None:
        if info["tensorflow_version"] == "__current__":
            info["tensorflow_version"] = tf.__version__
            if "libasan" in open("/proc/self/maps").read():
                pytest.skip("running under ASan")
        (tmp_path / "_build_info.json").write_text(json.dumps(info))
    with pytest.raises(OpLibraryError, match=message) as raised:
        _load_uncached(monkeypatch, str(copy))
    assert isinstance(raised.value, GraphoptError)
    assert "make install" in str(raised.value) or "make asan" in str(raised.value)
    assert os.path.exists(copy)
