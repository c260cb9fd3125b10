"""Pure mapping between upstream JSON and proto messages whose field names are the JSON keys (no IO).

Shared by every service; each keeps its own quirks in a `JsonMapping` (docs/proto-design.md, sections 6-8):

Outbound, `JsonMapping.to_json` writes the set fields of a message under their proto field names, each
`extra` Struct merged into its own object (its keys win), and integral Struct numbers as JSON integers
(`"minItems": 1` stays 1); a service's `rewrites` reshape the objects of given message types.
`request_body` also merges a request's top-level `extra_body` into the body.

Inbound, `JsonMapping.fill` sets a message from parsed upstream JSON, tolerant by design: `null` means
unset, and a key the proto does not know, or a known key whose value has the wrong JSON type, is kept in
the nearest `extra` Struct (nothing is dropped but unknown nulls). A service's `aliases` read a field from
a second key too.

`non_finite_violations` finds the NaN and infinite numbers a request cannot send as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from bridge.errors import FieldViolation

__all__ = [
    "JSON",
    "JsonMapping",
    "ReplyShapeError",
    "extra_body_violations",
    "non_finite_field",
    "non_finite_violations",
    "proto_text",
    "struct_to_json",
    "too_long",
    "update_struct",
    "value_to_json",
]

JSON = Any  # a json.loads() result
Rewrite = Callable[[dict[str, JSON]], JSON]  # an object's JSON -> what is sent instead
_EXTRA: Final = "extra"
_EXTRA_BODY: Final = "extra_body"
_MAX_SAFE_INT: Final = 2**53
_STRUCT: Final = struct_pb2.Struct.DESCRIPTOR.full_name
_VALUE: Final = struct_pb2.Value.DESCRIPTOR.full_name
_FREE_JSON: Final = frozenset({_STRUCT, _VALUE, struct_pb2.ListValue.DESCRIPTOR.full_name})
_INT_RANGES: Final = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOATS: Final = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)
_NOT_FINITE: Final = "must be a finite number"


@dataclass(frozen=True, slots=True)
class _Field:
    """What `fill` needs of a field, looked up once per message type (descriptor access is slow)."""

    name: str
    repeated: bool
    kind: int  # _SCALAR, _MESSAGE or _STRUCT_KIND
    coerce: Callable[[JSON], Any]  # scalars: the value as the field's type, or None if it does not fit


@dataclass(frozen=True, slots=True)
class _Plan:
    fields: Mapping[str, _Field]  # by JSON key; `extra` itself is not a key upstream JSON can fill
    has_extra: bool
    aliases: Mapping[str, _Field]  # second JSON keys of some fields


_SCALAR, _MESSAGE, _STRUCT_KIND = range(3)


class ReplyShapeError(Exception):
    """An upstream reply that is not the JSON document expected (not a mistyped key, which `extra` keeps,
    but a shape nothing can be made of); the message says what is wrong."""


class JsonMapping:
    """A service's JSON <-> proto mapping: the generic rules plus its rewrites and aliases.

    `rewrites`: message full name -> function reshaping that message's outbound JSON object (e.g. a
    ToolChoice with `mode` becomes the bare string). `aliases`: message full name -> {second JSON key:
    field name}; when both keys come, the field's own key is typed and the other is kept in `extra`
    (unless both carry the same string).
    """

    def __init__(
        self,
        *,
        rewrites: Mapping[str, Rewrite] | None = None,
        aliases: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self._rewrites: Mapping[str, Rewrite] = rewrites or {}
        self._aliases: Mapping[str, Mapping[str, str]] = aliases or {}
        self._plans: dict[type[Message], _Plan] = {}

    # --- outbound: proto -> upstream JSON --------------------------------------------------------------

    def to_json(self, message: Message) -> JSON:
        """JSON of the set fields of `message`, keyed by proto field name (= upstream JSON key)."""
        out: dict[str, JSON] = {}
        for field, value in message.ListFields():
            out[field.name] = self._field_to_json(field, value)
        extra = out.pop(_EXTRA, None)
        rewrite = self._rewrites.get(message.DESCRIPTOR.full_name)
        result = rewrite(out) if rewrite else out
        if extra and isinstance(result, dict):
            result.update(extra)
        return result

    def request_body(self, request: Message) -> dict[str, JSON]:
        """The upstream body of a request message: its JSON with `extra_body` merged into the top level."""
        body: dict[str, JSON] = self.to_json(request)
        extra_body = body.pop(_EXTRA_BODY, None)
        if extra_body:
            body.update(extra_body)
        return body

    def _field_to_json(self, field: FieldDescriptor, value: Any) -> JSON:
        if _is_map(field):
            value_field = _message_type(field).fields_by_name["value"]
            return {k: self._single_to_json(value_field, v) for k, v in value.items()}
        if field.is_repeated:
            return [self._single_to_json(field, v) for v in value]
        return self._single_to_json(field, value)

    def _single_to_json(self, field: FieldDescriptor, value: Any) -> JSON:
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            name = _message_type(field).full_name
            if name == _STRUCT:
                return struct_to_json(value)
            if name == _VALUE:
                return value_to_json(value)
            return self.to_json(value)
        if field.cpp_type in _FLOATS:
            return _number(value)
        return value

    # --- inbound: upstream JSON -> proto ---------------------------------------------------------------

    def fill(self, message: Message, obj: Mapping[str, JSON]) -> bool:
        """Sets `message` from `obj`; returns False if something could be kept nowhere in `message`."""
        plan = self._plan(type(message))
        leftovers: dict[str, JSON] = {}
        for key, value in obj.items():
            if value is None:
                continue  # null is absent (and an unknown null says nothing)
            field = plan.fields.get(key)
            if field is None and key in plan.aliases:
                field = plan.aliases[key]
                canonical = obj.get(field.name)
                if canonical is not None:
                    if isinstance(value, str) and canonical == value:
                        continue  # the same text under both keys: kept once, by the canonical key
                    field = None  # both keys, different values: the canonical one is typed, this one kept raw
            if field is None or not self._set_field(message, field, value):
                leftovers[key] = value  # unknown, wrong JSON type, or a nested object that lost something
        if not leftovers:
            return True
        if not plan.has_extra:
            return False
        update_struct(getattr(message, _EXTRA), leftovers)
        return True

    def _plan(self, message_class: type[Message]) -> _Plan:
        plan = self._plans.get(message_class)
        if plan is None:
            descriptor = cast("Descriptor", message_class.DESCRIPTOR)
            fields = {f.name: _field_plan(f) for f in descriptor.fields if f.name != _EXTRA}
            second_keys = self._aliases.get(descriptor.full_name, {})
            aliases = {alias: fields[name] for alias, name in second_keys.items()}
            plan = _Plan(fields, _EXTRA in descriptor.fields_by_name, aliases)
            self._plans[message_class] = plan
        return plan

    def _set_field(self, message: Message, field: _Field, value: JSON) -> bool:
        if field.repeated:
            return isinstance(value, list) and self._set_repeated(message, field, value)
        if field.kind == _SCALAR:
            scalar = field.coerce(value)
            if scalar is None:
                return False
            setattr(message, field.name, scalar)
            return True
        if not isinstance(value, Mapping):
            return False
        target = getattr(message, field.name)
        target.SetInParent()
        if field.kind == _STRUCT_KIND:
            update_struct(target, value)
            return True
        return self.fill(target, value)

    def _set_repeated(self, message: Message, field: _Field, items: Iterable[JSON]) -> bool:
        container = getattr(message, field.name)
        if field.kind == _SCALAR:
            scalars = [field.coerce(item) for item in items]
            if any(s is None for s in scalars):
                return False
            container.extend(scalars)
            return True
        complete = True
        for item in items:
            if not isinstance(item, Mapping):
                return False
            complete = self.fill(container.add(), item) and complete
        return complete


# --- free JSON ----------------------------------------------------------------------------------------


def struct_to_json(struct: struct_pb2.Struct) -> dict[str, JSON]:
    """A Struct as a plain dict, integral numbers as ints."""
    return {key: value_to_json(value) for key, value in struct.fields.items()}


def value_to_json(value: struct_pb2.Value) -> JSON:
    """A Value as plain JSON, integral numbers as ints."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_json(value.struct_value)
    if kind == "list_value":
        return [value_to_json(v) for v in value.list_value.values]
    if kind == "number_value":
        return _number(value.number_value)
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None  # null_value, or a Value with no kind set


def _number(x: float) -> int | float:
    # Struct and double fields hold doubles; upstream JSON schemas and logit biases want integers.
    if math.isfinite(x) and x.is_integer() and abs(x) <= _MAX_SAFE_INT:
        return int(x)
    return x


def update_struct(struct: struct_pb2.Struct, values: Mapping[str, JSON]) -> None:
    """`struct.update(values)`, with what a Struct can't hold made holdable (see _struct_safe)."""
    try:
        struct.update(values)
    except (OverflowError, UnicodeEncodeError):
        struct.update(_struct_safe(values))


def _struct_safe(value: JSON) -> JSON:
    """`value` with what a Struct can't hold made holdable: integers beyond a double as their decimal
    string, lone surrogates as U+FFFD."""
    if isinstance(value, Mapping):
        return {_text(k): _struct_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_struct_safe(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int) and not isinstance(value, bool) and _int_as_float(value) is None:
        return str(value)
    return value


# --- scalars --------------------------------------------------------------------------------------------


def _is_map(field: FieldDescriptor) -> bool:
    return field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name  # only called on message fields
    return field.message_type


def _field_plan(field: FieldDescriptor) -> _Field:
    if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE:
        return _Field(field.name, field.is_repeated, _SCALAR, _coercer(field.cpp_type))
    kind = _STRUCT_KIND if _message_type(field).full_name == _STRUCT else _MESSAGE
    return _Field(field.name, field.is_repeated, kind, _no_coercion)


def _coercer(cpp_type: int) -> Callable[[JSON], Any]:
    """The function turning a JSON value into a scalar of `cpp_type` (None when it does not fit)."""
    if cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return _as_text
    if cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return _as_bool
    if cpp_type in _FLOATS:
        return _as_float
    low, high = _INT_RANGES[cpp_type]
    return lambda value: _as_int(value, low, high)


def _no_coercion(value: JSON) -> Any:
    return value


def _as_text(value: JSON) -> str | None:
    return _text(value) if isinstance(value, str) else None


def _as_bool(value: JSON) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_float(value: JSON) -> float | None:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_as_float(value)
    return None


def _as_int(value: JSON, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if low <= value <= high else None


def _int_as_float(value: int) -> float | None:
    try:
        return float(value)
    except OverflowError:  # JSON integers have no size limit; doubles do
        return None


def proto_text(value: str) -> str:
    """`value` as a proto string field takes it (the rule `fill` applies to every string): `value`, with
    lone UTF-16 surrogates (a JSON "\\ud83d" cut from its pair) made U+FFFD."""
    return _text(value)


def _text(value: str) -> str:
    """`value`, with lone UTF-16 surrogates (a JSON "\\ud83d" cut from its pair) made U+FFFD: proto
    strings must be valid UTF-8."""
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


# --- what a request may send ----------------------------------------------------------------------------


def non_finite_violations(path: str, message: Message) -> list[FieldViolation]:
    """NaN or infinite numbers (JSON has none) anywhere below `message`; `path` prefixes the field paths
    ("" at the top level, else ending with ".")."""
    violations: list[FieldViolation] = []
    for field, value in message.ListFields():
        non_finite_field(violations, path, field, value)
    return violations


# How non_finite_field treats a field, by descriptor (decided once per field; fields of other kinds, such as
# strings, hold no number).
_FLOAT, _MAP, _FREE, _MESSAGES, _MESSAGE, _NO_NUMBER = range(6)
_FLOAT_TYPES: Final = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_KINDS: dict[FieldDescriptor, int] = {}


def _kind_of(field: FieldDescriptor) -> int:
    kind = field.message_type
    if kind is None:
        # A repeated float field is a list, never checked (the requests have none).
        return _FLOAT if field.type in _FLOAT_TYPES and not field.is_repeated else _NO_NUMBER
    if kind.GetOptions().map_entry:
        return _MAP
    if kind.full_name in _FREE_JSON:
        return _FREE
    return _MESSAGES if field.is_repeated else _MESSAGE


def non_finite_field(violations: list[FieldViolation], path: str, field: FieldDescriptor, value: Any) -> None:
    """Adds to `violations` the NaN or infinite numbers of one set field (`value`) of a message whose
    fields' paths start with `path`; the path is only written when there is a violation."""
    kind = _KINDS.get(field)
    if kind is None:
        kind = _KINDS[field] = _kind_of(field)
    if kind == _NO_NUMBER:
        return
    if kind == _FLOAT:
        if not math.isfinite(value):
            violations.append((f"{path}{field.name}", _NOT_FINITE))
    elif kind == _MAP:
        violations += [(f"{path}{field.name}[{k}]", _NOT_FINITE) for k, v in value.items() if not _finite(v)]
    elif kind == _FREE:
        if not _finite(value):
            violations.append(
                (f"{path}{field.name}", "contains a NaN or infinite number, which JSON cannot carry")
            )
    elif kind == _MESSAGES:
        for i, item in enumerate(value):
            for sub, sub_value in item.ListFields():
                non_finite_field(violations, f"{path}{field.name}[{i}].", sub, sub_value)
    else:
        for sub, sub_value in value.ListFields():
            non_finite_field(violations, f"{path}{field.name}.", sub, sub_value)


def _finite(value: Any) -> bool:
    """False if a number in `value` (a float, Struct, Value or ListValue) is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, struct_pb2.Struct):
        return all(_finite(v) for v in value.fields.values())
    if isinstance(value, struct_pb2.ListValue):
        return all(_finite(v) for v in value.values)
    if isinstance(value, struct_pb2.Value):
        kind = value.WhichOneof("kind")
        return kind not in ("number_value", "struct_value", "list_value") or _finite(getattr(value, kind))
    return True


def extra_body_violations(
    request: Message, reserved: Mapping[str, str], set_fields: Collection[str] | None = None
) -> list[FieldViolation]:
    """Keys of a request's `extra_body` that are `reserved` (key -> what is wrong) or repeat a field set in
    the request (`set_fields`, the names of its set fields, if the caller has them). At the top level a
    repeated field is rejected, not overridden: nothing fills extra_body for the caller, so a duplicate
    there is a mistake (unlike a nested `extra`, which wins)."""
    if set_fields is None:
        set_fields = {field.name for field, _ in request.ListFields()}
    violations: list[FieldViolation] = []
    for key in sorted(getattr(request, _EXTRA_BODY).fields):
        if key in reserved:
            violations.append((f"{_EXTRA_BODY}.{key}", reserved[key]))
        elif key in set_fields and key != _EXTRA_BODY:
            violations.append((f"{_EXTRA_BODY}.{key}", f"duplicates the field {key}; set it in one place"))
    return violations


def too_long(path: str, value: str, limit: int, whose: str = "the gateway's") -> list[FieldViolation]:
    """A violation if `value` has more than `limit` characters (code points), the limit being `whose`."""
    if len(value) <= limit:
        return []
    return [(path, f"must be at most {limit} characters ({whose} limit), not {len(value)}")]
