"""JSON from untrusted sources, parsed under limits that apply while parsing.

``json.loads`` builds the whole document before anyone can look at it: a 4 MB request body of a
million one-letter strings becomes a million Python objects (2 GB with what followed), and a
document nested 100,000 deep raises ``RecursionError``. ``loads`` here reads the same JSON
(RFC 8259; NaN and Infinity only when asked for) with an explicit stack, no recursion, and stops
at the first value past a limit: nesting depth, values in all, items in one array or object,
characters in one string, digits in one number. Strings are scanned by ``json``'s own C scanner,
so a long string (a base64 image) costs what ``json.loads`` costs.

Two errors, both ``ValueError``: ``json.JSONDecodeError`` for JSON that is not well-formed
(with line and column) and ``JSONLimitError`` for a limit; their messages are one line.
"""

from __future__ import annotations

import json
import math
import re
from json.decoder import scanstring
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
MAX_NUMBER_CHARS = 100  # a longer number literal is no one's data (int() refuses 4,300 digits)


class JSONLimitError(ValueError):
    """A JSON document over a limit. ``kind``: depth | values | items | string | number;
    ``limit``: the limit; ``key``: the object key of the container or string concerned."""

    def __init__(self, kind: str, limit: int, key: str | None, message: str):
        super().__init__(message)
        self.kind, self.limit, self.key = kind, limit, key


def loads(text: str | bytes, *, max_depth: int = 32, max_values: int = 100_000,
          max_items: int | None = None, max_string: int | None = None,
          allow_nan: bool = False) -> Any:
    """Parse one JSON document under limits (``None``: no limit on that count).

    ``max_depth``: arrays and objects nested inside each other; ``max_values``: values of any
    kind, object keys included; ``max_items``: items of one array or members of one object;
    ``max_string``: characters of one string. Bytes must be UTF-8.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"not UTF-8 ({exc.reason} at byte {exc.start})", "",
                                       0) from None
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM", text, 0)
    values = 0
    # one entry per open container: [the container, its key in its parent, key pending a value]
    stack: list[list[Any]] = []
    root: Any = None

    def limit(kind: str, n: int, message: str, key: str | None = None) -> JSONLimitError:
        return JSONLimitError(kind, n, key, message)

    def read_key(pos: int) -> tuple[str, int]:
        nonlocal values
        if text[pos:pos + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes",
                                       text, pos)
        values += 1
        if values > max_values:
            raise limit("values", max_values, f"JSON with more than {max_values} values")
        key, pos = scanstring(text, pos + 1, True)
        if max_string is not None and len(key) > max_string:
            raise limit("string", max_string, f"JSON string longer than {max_string} "
                                              f"characters")
        pos = _SPACE.match(text, pos).end()
        if text[pos:pos + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
        return key, _SPACE.match(text, pos + 1).end()

    def attach(value: Any) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        container = top[0]
        if max_items is not None and len(container) >= max_items:
            raise limit("items", max_items, f"JSON {'array' if isinstance(container, list) else 'object'}"
                        f"{_where(top[1])} with more than {max_items} items", top[1])
        if isinstance(container, list):
            container.append(value)
        else:
            container[top[2]] = value

    pos = _SPACE.match(text, 0).end()
    while True:
        # -- one value at pos ----------------------------------------------------------------
        values += 1
        if values > max_values:
            raise limit("values", max_values, f"JSON with more than {max_values} values")
        ch = text[pos:pos + 1]
        if ch in ("{", "["):
            if len(stack) >= max_depth:
                raise limit("depth", max_depth, f"JSON nested deeper than {max_depth} levels")
            container: Any = {} if ch == "{" else []
            parent_key = stack[-1][2] if stack and isinstance(stack[-1][0], dict) else None
            attach(container)
            stack.append([container, parent_key, None])
            pos = _SPACE.match(text, pos + 1).end()
            close = "}" if ch == "{" else "]"
            if text[pos:pos + 1] == close:
                pos += 1
                stack.pop()
            else:
                if ch == "{":
                    stack[-1][2], pos = read_key(pos)
                continue
        else:
            if ch == '"':
                value, pos = scanstring(text, pos + 1, True)
                if max_string is not None and len(value) > max_string:
                    key = stack[-1][2] if stack and isinstance(stack[-1][0], dict) else (
                        stack[-1][1] if stack else None)
                    raise limit("string", max_string, f"JSON string{_where(key)} longer than "
                                                      f"{max_string} characters", key)
            elif (m := _NUMBER.match(text, pos)) is not None and m.end() > pos:
                if m.end() - pos > MAX_NUMBER_CHARS:
                    raise limit("number", MAX_NUMBER_CHARS,
                                f"JSON number longer than {MAX_NUMBER_CHARS} characters")
                literal = m.group()
                value = float(literal) if m.group(1) or m.group(2) else int(literal)
                pos = m.end()
            else:
                for word, value in (*_LITERALS.items(), *_NON_FINITE.items()):
                    if text.startswith(word, pos):
                        break
                else:
                    raise json.JSONDecodeError("Expecting value", text, pos)
                if word in _NON_FINITE and not allow_nan:
                    raise json.JSONDecodeError(f"{word} is not JSON", text, pos)
                pos += len(word)
            attach(value)
        # -- after a value: commas and closing brackets ----------------------------------------
        while True:
            pos = _SPACE.match(text, pos).end()
            if not stack:
                if pos != len(text):
                    raise json.JSONDecodeError("Extra data", text, pos)
                return root
            container = stack[-1][0]
            ch = text[pos:pos + 1]
            if ch == ",":
                pos = _SPACE.match(text, pos + 1).end()
                if isinstance(container, dict):
                    stack[-1][2], pos = read_key(pos)
                break
            if ch == ("}" if isinstance(container, dict) else "]"):
                pos += 1
                stack.pop()
                continue
            raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)


def _where(key: str | None) -> str:
    return f" {key!r}" if key is not None else ""
