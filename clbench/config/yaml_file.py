"""YAML for stream and experiment files: plain data, every key once, aliases bounded, lines kept.

PyYAML's ``safe_load`` builds plain data only, but three things about it do not suit a file a user
(or someone handing the user a file) writes:

* a key given twice keeps the last value silently — here it is an error naming both lines;
* aliases are free — a 1.6 KB file of nested ``*alias`` lists ("billion laughs") expands into billions
  of nodes as soon as anything walks it (a type check that prints the value, a hash of the config).
  Here the document may expand to at most :func:`expansion_limit` (four times the file's own size plus
  1 MiB, counting a scalar's characters and one per node), so an anchor reused a few times is fine and
  a bomb is refused before anything is built; an alias that contains itself is refused too;
* an error deep inside the data cannot say which line it is on — :func:`load_yaml_lines` returns, with
  the data, the line of every key and list item (``{"tasks[1].name": 7}``), for errors that name the
  file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clbench.errors import ConfigError


def expansion_limit(text: str) -> int:
    return 4 * len(text) + 2**20


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key given twice in one mapping (merge keys ``<<`` aside: they are
    meant to be overridden)."""

    source = ""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise ConfigError(f"{self.source}:{key_node.start_mark.line + 1}",
                                      f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                                      f"{key_node.start_mark.line + 1}); YAML would keep the last silently — "
                                      "remove one")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, limit: int, where: str) -> int:
    """The size of ``node`` with every alias expanded (a scalar counts its characters plus one, a
    collection one plus its children), stopping with an error past ``limit`` or at an alias inside itself."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"{where}:{n.start_mark.line + 1}", "an alias refers to the node that contains it "
                              "(a recursive structure); write the data out instead")
        if isinstance(n, yaml.ScalarNode):
            total = len(n.value) + 1
        else:
            open_nodes.add(key)
            total = 1
            children = (c for pair in n.value for c in pair) if isinstance(n, yaml.MappingNode) else iter(n.value)
            for child in children:
                total += size(child)
                if total > limit:
                    raise ConfigError(f"{where}:{n.start_mark.line + 1}", f"aliases expand this document past "
                                      f"{limit:,} characters (four times the file plus 1 MiB); an alias bomb? "
                                      "write the data out instead of repeating aliases")
            open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(node)


def _lines(node, prefix: str, out: dict[str, int]) -> None:
    """``out[field] = line`` for every key and list item under ``node`` (fields as ConfigError writes them)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                field = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                out.setdefault(field, key_node.start_mark.line + 1)
                _lines(value_node, field, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            field = f"{prefix}[{i}]"
            out.setdefault(field, item.start_mark.line + 1)
            _lines(item, field, out)


def parse_yaml(text: str, where: str) -> tuple[Any, dict[str, int]]:
    """``(data, {field: line})`` from YAML ``text``; ``where`` names the source in errors."""
    try:
        loader = _Loader(text)  # (its reader refuses control characters such as NUL at once)
        loader.source = where
        try:
            node = loader.get_single_node()
            if node is None:
                return None, {}
            _expanded_size(node, expansion_limit(text), where)
            lines: dict[str, int] = {}
            _lines(node, "", lines)
            return loader.construct_document(node), lines
        finally:
            loader.dispose()
    except RecursionError:
        raise ConfigError(where, "nested too deeply to read (thousands of levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise ConfigError(at, f"malformed YAML: {getattr(exc, 'problem', None) or exc}") from None


def read_text(path: Path) -> str:
    """``path`` as UTF-8 text; a missing file, a folder or a byte that is not UTF-8 is a ``ConfigError``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a folder, not a YAML file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"{path}:{line}", f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column} "
                          "(save the file as UTF-8)") from None


def load_yaml_lines(path: Path) -> tuple[Any, dict[str, int]]:
    """``(data, {field: line})`` of the YAML file ``path`` (see :func:`parse_yaml`)."""
    return parse_yaml(read_text(path), str(path))


def load_yaml(path: Path) -> Any:
    """The data of the YAML file ``path``; a syntax error, a key given twice, an alias bomb or a byte that is
    not UTF-8 is a ``ConfigError`` naming the file and line."""
    return load_yaml_lines(path)[0]


def at_line(path: str, lines: dict[str, int], field: str) -> str:
    """``"<file>:<line>: <field>"`` — where an error about ``field`` of file ``path`` points."""
    line = lines.get(field)
    return f"{path}:{line}: {field}" if line else f"{path}: {field}"
