"""Reading a study file with bounds: its size before it is read, its nesting depth and the size
of its alias expansion while it is parsed.

A study file is a few hundred bytes of YAML. Without bounds a hostile or broken one costs what it
likes: 50 MB took 81 s and 2.7 GB before the schema refused it, 50,000 nested brackets ended in a
RecursionError, and an "alias bomb" (``a: &a [x, x]``, ``b: &b [*a, *a]``, ...) is a few lines
that the schema expands into billions of values. Here the file is refused unread above
:data:`MAX_BYTES`; the YAML composer counts depth and the nodes every alias stands for, and stops
at :data:`MAX_DEPTH` / :data:`MAX_NODES`, before any Python object is built. Like ``safe_load``,
no Python tag is constructed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpsearch.errors import ConfigError
from hpsearch.spec.config import one_line

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "read_study_yaml"]

#: the largest study file read (bytes, about 1000 lines): data belongs in ``data.source``, not in the study file
MAX_BYTES = 65_536
#: the deepest nesting of mappings and lists (a study file needs about 5)
MAX_DEPTH = 64
#: the most values (nodes) the document may stand for, every alias counted as what it repeats
MAX_NODES = 10_000


class _Refused(yaml.YAMLError):
    """The document went past a bound; its message is the one-line problem and fix."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer counts depth and expanded nodes (aliases at their full size)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, once composed
        self._path: list[str] = []  # the keys / [indexes] down to the node being composed

    # the scanner reads a whole run of opening brackets before the composer sees one (in quadratic
    # time): its own levels are bounded here, as it reads them
    def fetch_flow_collection_start(self, token_class: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(f"line {self.line + 1}: nested deeper than {MAX_DEPTH} levels; remove the extra nesting")
        super().fetch_flow_collection_start(token_class)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= MAX_DEPTH:
            raise _Refused(f"line {self.line + 1}: nested deeper than {MAX_DEPTH} levels; remove the extra nesting")
        return bool(super().add_indent(column))

    def _field(self) -> str:
        """Where the composer is, as messages name a field: ``space.n_hidden.choice``."""
        shown = "".join(p if p.startswith("[") else f".{p}" for p in self._path[:6]).lstrip(".")
        return (shown + ("..." if len(self._path) > 6 else "") or "(top level)") + ": "

    def _count(self, n: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise _Refused(f"{self._field()}the file stands for more than {MAX_NODES} values (aliases counted as"
                           " what they repeat); write the values out or remove the aliases")

    def compose_node(self, parent: Any, index: Any) -> Any:
        if index is None:  # a mapping key: not a level of its own
            return super().compose_node(parent, index)  # type: ignore[arg-type]  # (the stubs say int; keys pass None)
        self._path.append(f"[{index}]" if isinstance(index, int) else str(getattr(index, "value", "?"))[:40])
        try:
            return self._compose_counted(parent, index)
        finally:
            self._path.pop()

    def _compose_counted(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)  # type: ignore[no-untyped-call]  # (untyped in the stubs)
            if target is not None:  # an unknown alias: the composer's own error says so
                size = self._sizes.get(id(target))
                if size is None:
                    raise _Refused(f"{self._field()}an alias refers to a mapping or list that contains it;"
                                   " remove the recursive alias")
                self._count(size)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"{self._field()}nested deeper than {MAX_DEPTH} levels; remove the extra nesting")
        try:
            before = self._nodes
            node = super().compose_node(parent, index)
            self._count(1)
            self._sizes[id(node)] = self._nodes - before
            return node
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A mapping whose key is written twice is refused (PyYAML keeps the last silently, and the
        first block's settings would be dropped without a word); merge keys (``<<``) may repeat."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise _Refused(f"line {line}: {key.value!r} is given twice (lines {seen[key.value]} and"
                                       f" {line}); keep one")
                    seen[key.value] = line
        return super().construct_mapping(node, deep)


def _read_text(p: Path, where: str) -> str:
    """The file's text; refused unread when it is larger than :data:`MAX_BYTES`."""
    if not p.exists():
        raise ConfigError(f"{where}: study file not found; check the path")
    if p.is_dir():
        raise ConfigError(f"{where}: is a directory; give a study .yaml file")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # a growing file or a device is bounded all the same
    except OSError as e:
        raise ConfigError(f"{where}: cannot read the file ({e.__class__.__name__}); check its permissions") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{where}: the study file is larger than {MAX_BYTES} bytes; keep only settings"
                          " in it and put data in a file named by data.source")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: is not UTF-8 text; save it as UTF-8") from None


def read_study_yaml(path: str | Path, where: str) -> tuple[Any, str]:
    """The parsed YAML of a study file and its text, or one :class:`ConfigError` line.

    Refused: a file over :data:`MAX_BYTES`, nesting over :data:`MAX_DEPTH`, more than
    :data:`MAX_NODES` values once aliases are expanded, a recursive alias, YAML syntax errors and
    values YAML cannot build (Python tags, an integer of thousands of digits, a bad date).
    """
    text = _read_text(Path(path), where)
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters already
        return loader.get_single_data(), text
    except _Refused as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(one_line(f"{where}: YAML syntax error{line}: {problem}; fix the file")) from None
    except (ValueError, OverflowError) as e:  # a scalar YAML resolves but Python cannot build
        raise ConfigError(one_line(f"{where}: a value cannot be read ({str(e)[:120]}); fix the file")) from None
    finally:
        if loader is not None:
            loader.dispose()
