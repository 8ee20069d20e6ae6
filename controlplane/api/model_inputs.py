"""GraphQL input types generated from the domain's pydantic models, so GraphiQL completes and checks what the domain validates.

One source of truth: a job spec, a supervision policy or an allocation spec is
the pydantic model; its GraphQL input type, its enums and its defaults are read
off that model here, and its JSON Schema (for files) off the same model by
pydantic. Per field:

- the name in camelCase (strawberry's converter, like every input of the schema);
- the type: bool, int, float and str as such; an Enum or a Literal of strings
  becomes a GraphQL enum whose values are the lower-case strings written in job
  files and policies; ``list[X]``; ``X | None`` is nullable; a nested model its
  own input type (a recursive one, TaskSpec.children, through strawberry.lazy);
  a dict or Any the JSON scalar;
- the default: the model's own, so the schema shows it (``maxRestarts: Int! = 3``);
- the description: the field's, then its limits in words (ranges, lengths,
  patterns, the string rule of domain/text.py).

GraphQL checks the shape (types, enum values, required fields, unknown fields)
before any resolver runs; pydantic still checks the values (ranges, patterns,
cross-field rules) when the resolver hands the input to the domain as a dict
(``to_spec``), so its errors keep naming the field.

Why not strawberry.experimental.pydantic.input (0.341): it fails on Literal
fields ("Unexpected type") and on dict fields, cannot refer to a model from
itself (UnregisteredTypeException for TaskSpec.children), needs
strawberry.enum on the domain's own enums (and names their values UPPER_CASE),
drops every constraint from the schema, and declares a nested model with a
default as required (``backoff: BackoffInput!`` with no default shown, though
it may be omitted). Each would need a hand-written override, which is the
drift this module exists to avoid.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, Union, cast, get_args, get_origin

import annotated_types
import strawberry
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from strawberry.scalars import JSON

from controlplane.domain.text import describe as describe_text_rule

_MODULE = sys.modules[__name__]


@dataclass(frozen=True)
class EnumSpec:
    """How a domain enum (or a Literal field) appears in GraphQL: its name, what it is, what each value means."""

    name: str
    description: str
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass
class InputTypes:
    """Generates (once each) the input types of some pydantic models and the enums they use.

    names: model -> GraphQL input type name (every model met must have one);
    enums: domain Enum class, or (model, field name) of a Literal field -> EnumSpec;
    descriptions: model -> description of its input type (default: the model's docstring).
    """

    names: Mapping[type[BaseModel], str]
    enums: Mapping[type[enum.Enum] | tuple[type[BaseModel], str], EnumSpec]
    descriptions: Mapping[type[BaseModel], str] = field(default_factory=dict)
    enum_note: str = ""
    _inputs: dict[type[BaseModel], type] = field(default_factory=dict, init=False)
    _enums: dict[str, type[enum.Enum]] = field(default_factory=dict, init=False)
    _pending: set[type[BaseModel]] = field(default_factory=set, init=False)
    _fields: dict[type[BaseModel], dict[str, Any]] = field(default_factory=dict, init=False)
    _json_fields: dict[type[BaseModel], set[str]] = field(default_factory=dict, init=False)

    def input_type(self, model: type[BaseModel]) -> type:
        """The strawberry input type of `model` (generated on first use)."""
        found = self._inputs.get(model)
        if found is not None:
            return found
        name = self._name(model)
        self._pending.add(model)
        try:
            annotations: dict[str, Any] = {}
            self._fields[model] = annotations
            namespace: dict[str, Any] = {"__module__": __name__, "__annotations__": annotations, "__qualname__": name}
            for python_name, info in model.model_fields.items():
                annotation, limits = self._graphql_type(model, python_name, info.annotation, list(info.metadata))
                if annotation is JSON:  # graphql-core cannot introspect an object default: optional, the domain's default
                    annotation, limits = Optional[JSON], [*limits, f"default {_json_default(info)}"]  # noqa: UP045
                    default: dict[str, Any] = {"default": strawberry.UNSET}
                    self._json_fields.setdefault(model, set()).add(python_name)
                else:
                    default = self._default(info, annotation)
                annotations[python_name] = annotation
                namespace[python_name] = strawberry.field(description=_description(info, limits), **default)
            cls = strawberry.input(type(name, (), namespace), name=name, description=self._type_description(model))
        finally:
            self._pending.discard(model)
        self._inputs[model] = cls
        setattr(_MODULE, name, cls)  # where strawberry.lazy finds it (recursive models)
        return cls

    def generated(self) -> list[type]:
        """The input types generated so far."""
        return list(self._inputs.values())

    def enum_type(self, key: type[enum.Enum] | tuple[type[BaseModel], str], values: list[str]) -> type[enum.Enum]:
        spec = self.enums.get(key)
        if spec is None:
            raise TypeError(f"no GraphQL enum named for {key!r}; add it to `enums`")
        found = self._enums.get(spec.name)
        if found is not None:
            return found
        unknown = sorted(set(spec.values) - set(values))
        if unknown:
            raise TypeError(f"{spec.name} describes values that do not exist: {', '.join(unknown)}")
        members = {v: strawberry.enum_value(v, description=spec.values.get(v)) for v in values}
        python_enum = cast(type[enum.Enum], enum.Enum(spec.name, members))  # the functional API: a class, not a member
        generated = strawberry.enum(python_enum, name=spec.name, description=f"{spec.description} {self.enum_note}".strip())
        self._enums[spec.name] = generated
        setattr(_MODULE, spec.name, generated)
        return generated

    # --- types ----------------------------------------------------------------------------------
    def _graphql_type(self, model: type[BaseModel], name: str, annotation: Any, metadata: list[Any]) -> tuple[Any, list[str]]:
        """The strawberry annotation for a field's type, and its limits in words."""
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            inner, limits = self._graphql_type(model, name, args[0], [*metadata, *args[1:]])
            return inner, limits
        if origin in (Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                raise TypeError(f"{model.__name__}.{name}: a union of several types has no GraphQL input type")
            inner, limits = self._graphql_type(model, name, rest[0], metadata)
            return Optional[inner], limits  # noqa: UP045 - a runtime type for strawberry
        if origin is list:
            item, item_limits = self._graphql_type(model, name, args[0], [])
            limits = _limits(metadata, unit="items")
            if item_limits:
                limits.append("each: " + "; ".join(item_limits))
            return list[item], limits  # type: ignore[valid-type]
        if origin is dict or annotation is Any or annotation is dict:
            return JSON, _limits(metadata, unit="entries")
        if origin is Literal:
            if not all(isinstance(a, str) for a in args):
                raise TypeError(f"{model.__name__}.{name}: only Literals of strings become enums")
            return self.enum_type((model, name), list(args)), []
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return self.enum_type(annotation, [str(m.value) for m in annotation]), []
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in self._pending:  # a model that contains itself: resolved by name when the schema is built
                return Annotated[self._name(annotation), strawberry.lazy(__name__)], []
            return self.input_type(annotation), []
        if annotation in (bool, int, float, str):
            return annotation, _limits(metadata, unit="characters" if annotation is str else None)
        raise TypeError(f"{model.__name__}.{name}: no GraphQL input type for {annotation!r}")

    # --- defaults -------------------------------------------------------------------------------
    def _default(self, info: FieldInfo, annotation: Any) -> dict[str, Any]:
        """strawberry.field keywords giving the model's default (none for a required field)."""
        if info.default_factory is not None:
            factory: Callable[[], Any] = info.default_factory  # type: ignore[assignment]
            return {"default_factory": lambda: self._convert(factory(), annotation)}
        if info.default is PydanticUndefined:
            return {}
        return {"default": self._convert(info.default, annotation)}

    def _convert(self, value: Any, annotation: Any) -> Any:
        """A domain value as the generated type `annotation` holds it (enum members, input objects)."""
        if value is None:
            return None
        origin, args = get_origin(annotation), get_args(annotation)
        if origin in (Union, types.UnionType):
            return self._convert(value, next(a for a in args if a is not type(None)))
        if origin is list:
            return [self._convert(v, args[0]) for v in value]
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return annotation(value.value if isinstance(value, enum.Enum) else value)
        if isinstance(value, BaseModel):
            model = type(value)
            cls, fields, left_out = self.input_type(model), self._fields[model], self._json_fields.get(model, set())
            return cls(**{k: self._convert(getattr(value, k), fields[k]) for k in fields if k not in left_out})
        return value

    def _name(self, model: type[BaseModel]) -> str:
        try:
            return self.names[model]
        except KeyError:
            raise TypeError(f"no GraphQL input name for {model.__name__}; add it to `names`") from None

    def _type_description(self, model: type[BaseModel]) -> str | None:
        return self.descriptions.get(model) or (model.__doc__ or "").strip() or None


def _description(info: FieldInfo, limits: list[str]) -> str | None:
    """The field's own description, then its limits: "The first delay, in seconds. At least 0; at most 3600." """
    parts = [p for p in (info.description, "; ".join(limits)) if p]
    return " ".join(p[0].upper() + p[1:].rstrip(".") + "." for p in parts) or None


def _json_default(info: FieldInfo) -> str:
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    return "none (required)" if value is PydanticUndefined else json.dumps(value)


def _limits(metadata: list[Any], *, unit: str | None) -> list[str]:
    """Constraints of a field in words: ranges, lengths, patterns, the string rule."""
    out: list[str] = []
    rule = describe_text_rule(metadata)
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            out.append(f"at least {m.ge}")
        elif isinstance(m, annotated_types.Gt):
            out.append(f"more than {m.gt}")
        elif isinstance(m, annotated_types.Le):
            out.append(f"at most {m.le}")
        elif isinstance(m, annotated_types.Lt):
            out.append(f"less than {m.lt}")
        elif isinstance(m, annotated_types.MinLen) and rule is None:
            out.append(f"at least {m.min_length} {_unit(unit, m.min_length)}")
        elif isinstance(m, annotated_types.MaxLen) and rule is None:
            out.append(f"at most {m.max_length} {_unit(unit, m.max_length)}")
        elif getattr(m, "pattern", None):
            out.append(f"matching {m.pattern}")
    if rule is not None:
        out.append(rule)
    return out


def _unit(unit: str | None, n: int) -> str:
    if unit is None:
        return "long"
    return unit.removesuffix("s") if n == 1 and unit.endswith("s") else unit
