"""What a string must be to enter the control plane: one rule, checked where the string arrives.

Strings from outside (GraphQL arguments and inputs, POST /query, the CLI, node
agents) end up as parameters of engine queries, and not every engine carries
every string: FalkorDB's parameter header cannot hold a NUL, no driver can
encode a lone surrogate, and a control character in a name is never what
anyone meant. So each string is checked once, at the entry, and a bad one is
refused with an InvalidInput that names the field:

- an **id** (a node, allocation, job, task or GPU; a cursor): 1 to 256 of the
  characters ids are made of (letters, digits, ``. _ - : / @ + =``), starting
  with a letter or a digit. Every id the control plane makes has this shape,
  so any other is a mistake, not a miss;
- a **line** (names, request ids, keys): text on one line, no control
  character at all;
- a **text** (argv items, environment values, reasons, raw queries): like a
  line, but tab, newline and carriage return are allowed, and it is kept
  verbatim (never stripped of surrounding whitespace);
- every kind: no lone surrogate (U+D800 to U+DFFF), a bounded length.

"Control character" means U+0000 to U+001F and U+007F. Quotes, backslashes,
query keywords and any other Unicode are ordinary text: values always travel
as query parameters, never pasted into query text.

The same rule objects serve pydantic specs (``Annotated[str, Line(max_length=200)]``,
which also puts the lengths into the JSON Schema) and the services, which
declare the arguments that come from outside with ``@checked(node_id=Id("id"))``.
What the control plane records rather than accepts (a process's output) is not
refused but made printable with ``printable``.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from controlplane.domain.errors import InvalidInput

ID_MAX = 256
ID_CHARS = "letters, digits, '.', '_', '-', ':', '/', '@', '+', '='"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]*$"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
#: a caller's idempotency key, and why something was asked for
REQUEST_ID_MAX = 256
REASON_MAX = 1000
#: how deep a JSON document (a native executor's config) may nest
JSON_MAX_DEPTH = 32

_NAMES = {0x00: "NUL", 0x09: "tab", 0x0A: "newline", 0x0D: "carriage return", 0x1B: "escape", 0x7F: "DEL"}


def _char(c: str) -> str:
    name = _NAMES.get(ord(c))
    return f"U+{ord(c):04X}" + (f" ({name})" if name else "")


@dataclass(frozen=True)
class _Rule:
    """A kind of string; `field` names it in errors when a service checks an argument (pydantic knows its own)."""

    field: str = ""
    max_length: int = 200
    min_length: int = 0

    def problem(self, value: str) -> str | None:
        """Why `value` is refused, or None."""
        if len(value) > self.max_length:
            return f"at most {self.max_length} characters (got {len(value)})"
        if len(value) < self.min_length:
            return "must not be empty" if self.min_length == 1 else f"at least {self.min_length} characters"
        bad = _SURROGATE.search(value)
        if bad:
            return f"must be valid Unicode text; found a lone surrogate {_char(bad.group())} at position {bad.start()}"
        bad = self._control().search(value)
        if bad:
            return f"must not contain control characters{self._allowed()}; found {_char(bad.group())} at position {bad.start()}"
        return None

    def _control(self) -> re.Pattern[str]:
        return _CONTROL

    def _allowed(self) -> str:
        return ""

    def describe(self) -> str:
        """The rule in words, for schema descriptions."""
        return f"one line, at most {self.max_length} characters, no control characters"

    def check(self, value: Any, *, field: str | None = None) -> Any:
        """`value` if it passes (None, a string, or a collection of strings checked one by one); else InvalidInput."""
        where = field if field is not None else self.field
        if value is None:
            return value
        if isinstance(value, (list, tuple, set, frozenset)):
            for i, item in enumerate(value):
                self.check(item, field=f"{where}[{i}]")
            return value
        if not isinstance(value, str):
            raise InvalidInput("must be a string", field=where or None)
        why = self.problem(value)
        if why is not None:
            raise InvalidInput(why, field=where or None)
        return value

    # --- as a pydantic annotation ---------------------------------------------------------------
    def _validate(self, value: Any) -> Any:
        if not isinstance(value, str):  # None of an optional field; other types are pydantic's to refuse
            return value
        why = self.problem(value)
        if why is not None:
            raise ValueError(why)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        found = handler(schema)
        target = found if found.get("type") == "string" else None
        for option in found.get("anyOf", ()):  # Optional[...]: the string branch
            if option.get("type") == "string":
                target = option
        if target is not None:
            target["maxLength"] = self.max_length
            if self.min_length:
                target["minLength"] = self.min_length
            target.update(self._json_extra())
        return found

    def _json_extra(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Line(_Rule):
    """Text on one line: no control character at all."""


@dataclass(frozen=True)
class Text(_Rule):
    """Free text: tab, newline and carriage return allowed, no other control character."""

    max_length: int = 4096

    def _control(self) -> re.Pattern[str]:
        return _CONTROL_BUT_WHITESPACE

    def _allowed(self) -> str:
        return " other than tab, newline and carriage return"

    def describe(self) -> str:
        return f"at most {self.max_length} characters; no control characters except tab, newline and carriage return"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        """Free text is kept verbatim, even in a model that strips the whitespace around its names."""
        inner: Any = handler(source)
        target = inner["schema"] if inner.get("type") == "nullable" else inner
        if target.get("type") == "str":
            target["strip_whitespace"] = False
        return core_schema.no_info_after_validator_function(self._validate, inner)


@dataclass(frozen=True)
class Id(_Rule):
    """The id of a vertex, or a cursor: the characters ids are made of."""

    max_length: int = ID_MAX
    min_length: int = 1

    def problem(self, value: str) -> str | None:
        why = _Rule.problem(self, value)
        if why is None and not _ID.fullmatch(value):
            return f"must be an id: {ID_CHARS}, starting with a letter or digit"
        return why

    def describe(self) -> str:
        return f"an id: 1 to {self.max_length} {ID_CHARS}, starting with a letter or digit"

    def _json_extra(self) -> dict[str, Any]:
        return {"pattern": ID_PATTERN}


@dataclass(frozen=True)
class Json(_Rule):
    """A JSON document (a native executor's configuration): every key a line, every string a text, nesting bounded."""

    max_length: int = 32_768

    def check(self, value: Any, *, field: str | None = None) -> Any:
        where = field if field is not None else self.field
        why = self._why(value)
        if why is not None:
            raise InvalidInput(why, field=where or None)
        return value

    def _why(self, value: Any) -> str | None:
        found = self._walk(value, "", 0)
        if found is None:
            return None
        path, why = found
        return f"{why} (at {path})" if path else why

    def _walk(self, value: Any, path: str, depth: int) -> tuple[str, str] | None:
        if depth > JSON_MAX_DEPTH:
            return path, f"nests deeper than {JSON_MAX_DEPTH} levels"
        if isinstance(value, str):
            why = Text(max_length=self.max_length).problem(value)
            return (path, why) if why else None
        if isinstance(value, Mapping):
            for k, v in value.items():
                key = str(k)
                shown = key[:40].encode("unicode_escape").decode("ascii")
                here = f"{path}.{shown}" if path else shown
                why = Line(max_length=ID_MAX).problem(key)
                if why:
                    return here, f"a key is refused: {why}"
                found = self._walk(v, here, depth + 1)
                if found:
                    return found
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                found = self._walk(v, f"{path}[{i}]", depth + 1)
                if found:
                    return found
        return None

    def _validate(self, value: Any) -> Any:
        why = self._why(value)
        if why is not None:
            raise ValueError(why)
        return value

    def describe(self) -> str:
        return (f"a JSON value; keys on one line, strings without control characters except tab, newline and "
                f"carriage return, nested at most {JSON_MAX_DEPTH} deep")


def check_mapping(value: Mapping[str, str], *, keys: _Rule, values: _Rule, what: str) -> None:
    """Each key and value of a string map (environment variables, labels): ValueError naming the key."""
    for k, v in value.items():
        why = keys.problem(k)
        if why is not None:
            raise ValueError(f"{what} name {k[:40]!r}: {why}")
        why = values.problem(v)
        if why is not None:
            raise ValueError(f"value of {what} {k!r}: {why}")


def printable(text: str) -> str:
    """What the control plane records of text it does not choose (a process's output): control characters
    other than tab and newlines, and lone surrogates, become U+FFFD."""
    return _UNPRINTABLE.sub("\ufffd", text)


# --- the arguments a service takes from outside ------------------------------------------------
P = ParamSpec("P")
R = TypeVar("R")

#: attribute of a checked function: parameter name -> its rule (for tests that enumerate entry points)
CHECKED = "__checked_arguments__"


def checked(**rules: _Rule) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Check these arguments with their rules before the call: ``@checked(watcher_id=Id("watcher"))``."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)
        unknown = sorted(set(rules) - set(signature.parameters))
        if unknown:
            raise TypeError(f"{fn.__qualname__} has no parameter {', '.join(unknown)}")

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            arguments = signature.bind(*args, **kwargs).arguments
            for name, rule in rules.items():
                if name in arguments:
                    rule.check(arguments[name])
            return fn(*args, **kwargs)

        setattr(call, CHECKED, dict(rules))
        return call

    return wrap


def rules_of(fn: Callable[..., Any]) -> Mapping[str, _Rule]:
    """The arguments `fn` checks (empty when it is not `@checked`)."""
    found: Mapping[str, _Rule] = getattr(fn, CHECKED, {})
    return found


def describe(metadata: Sequence[Any]) -> str | None:
    """The string rule among pydantic field metadata, in words (for GraphQL descriptions)."""
    for m in metadata:
        if isinstance(m, _Rule):
            return m.describe()
    return None
