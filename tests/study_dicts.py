"""Study files as Python mappings, shared by the schema and validation tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from hpsearch.errors import ConfigError

MINIMAL = {"name": "m", "data": {"source": "sklearn:iris"}, "space": {"n_neurons": {"int": [1, 4]}},
           "search": {"n_trials": 3}}


def with_(base: dict, **sections) -> dict:
    """A deep copy of ``base`` with sections merged in (``space`` is replaced, not merged)."""
    out = yaml.safe_load(yaml.safe_dump(base))
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space":
            out[k].update(v)
        else:
            out[k] = v
    return out


def one_line_error(parse: Callable[..., object], d: dict, **kw) -> str:
    """The ConfigError ``parse(d)`` raises: one line, naming the file first."""
    with pytest.raises(ConfigError) as ei:
        parse(d, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("s.yaml: ")
    return msg
