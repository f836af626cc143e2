"""``--front-end``: which door serves the gRPC port, on machines with and without the compiled extension."""

from __future__ import annotations

import sys

import pytest
from driftline.errors import Unsupported
from driftline.server import compiled, front_end
from driftline.server.settings import ServerSettings


def settings(**changes) -> ServerSettings:
    return ServerSettings(registry="unused", **changes)


def test_python_serves_on_the_python_door():
    assert front_end.choose(settings(front_end="python")) == "python"


def test_auto_serves_on_the_compiled_door_where_it_is_built():
    pytest.importorskip("driftline.server.compiled._door", reason="the compiled gRPC front end is not built")
    assert front_end.choose(settings()) == "compiled"


def test_compiled_without_the_extension_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "driftline.server.compiled._door", None)  # a machine where it was not built
    monkeypatch.delattr(compiled, "_door", raising=False)  # an earlier import in this process left it here
    with pytest.raises(Unsupported, match="not built.*make setup"):
        front_end.choose(settings(front_end="compiled"))
    assert front_end.choose(settings()) == "python"


def test_compiled_serves_tls_too(tmp_path):  # tests/server/test_compiled_tls.py serves it
    pytest.importorskip("driftline.server.compiled._door", reason="the compiled gRPC front end is not built")
    assert front_end.choose(settings(front_end="compiled", tls_cert=str(tmp_path / "c"),
                                     tls_key=str(tmp_path / "k"))) == "compiled"


def test_an_unknown_front_end_is_a_settings_error():
    with pytest.raises(ValueError, match="front end must be auto, compiled or python"):
        settings(front_end="cpp")
