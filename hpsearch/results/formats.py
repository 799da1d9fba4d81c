"""How values read from a study are written as text: one set of rules for the console tables and
the HTML report, so a score looks the same wherever it is shown. Pure functions, no imports of
hpsearch (layer 2, beside ``records``)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["data_line", "fmt_elapsed", "fmt_number", "fmt_params", "fmt_value"]


def fmt_value(v: Any, digits: int = 4) -> str:
    """A table cell: ``-`` for None; floats with ``digits`` decimals, scientific when tiny or huge."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{digits}g}" if (abs(v) < 1e-3 and v != 0) or abs(v) >= 1e6 else f"{v:.{digits}f}"
    return str(v)


def fmt_number(v: Any) -> str:
    """A compact number for summary columns: thousands grouped, no decimals, from 1000 up."""
    if isinstance(v, float) and not math.isnan(v) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return fmt_value(v)


def fmt_params(params: dict[str, Any]) -> str:
    """``name=value, ...`` with floats to three decimals."""
    return ", ".join(f"{k}={fmt_value(v, 3) if isinstance(v, float) else v}" for k, v in params.items())


def fmt_elapsed(seconds: float | None) -> str:
    """``42s``, ``3m07s`` or ``2h05m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def data_line(ds: dict[str, Any]) -> str:
    """One line describing a study's data from its stored data summary."""
    parts = [f"{ds.get('source', '?')}", f"{ds.get('rows', '?')} rows"]
    if "train_rows" in ds:
        parts.append(f"train/valid/test {ds.get('train_rows')}/{ds.get('valid_rows')}/{ds.get('test_rows')}")
    parts.append(f"{ds.get('features', '?')} features")
    if ds.get("classes"):
        parts.append(f"{ds['classes']} classes")
    return ", ".join(parts)
