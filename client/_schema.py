"""One declaration, three uses: a type annotation gives a JSON Schema, an encoder and a validator.

The daemon's API (client/_api.py) declares every request, response and event once, as a
dataclass with annotated fields, and this module turns each declaration into

* its JSON Schema (the 2020-12 dialect that OpenAPI 3.1 uses), collected as named
  components for the OpenAPI document (client/_openapi.py);
* an encoder from the Python value to JSON-ready values;
* a decoder that checks JSON against the same rules and builds the Python value, or
  raises `FieldError` naming the first field that is wrong and the stable error code
  that says how (MISSING_FIELD, EXTRA_FIELD, WRONG_TYPE, OUT_OF_RANGE, TOO_LARGE,
  DUPLICATE_FIELD: the protocol's own codes, docs/protocol.md §8).

So the document, the handlers' validation and the events can never disagree: there is
nothing written twice. The library's own types go through the same path: the events a
cell yields (client/_events.py), the message contents whose bounds the protocol declares
as `ContentFieldSpec` metadata (protocol/cell/_content.py), roll-ups and members. A new
event type added to the library is served and documented without a change here, as long
as its fields use the annotations below.

Mapping from annotations to JSON:

| annotation | JSON |
| --- | --- |
| `bool`, `int`, `float`, `str` | boolean, integer, number, string |
| `bytes` (and `NewType`s of it, e.g. `MessageId`) | lowercase hex (`contentEncoding: base16`) |
| `StrEnum` / `IntEnum` subclass, `Literal[...]` | string / integer with `enum` / `const` |
| `X \\| None` | X or null |
| `list[X]`, `tuple[X, ...]`, `frozenset[X]`, `set[X]` | array |
| `Mapping[K, V]` / `dict[K, V]` (K str or bytes) | object keyed by the key's JSON string |
| a dataclass | object; fields without defaults are required |
| a union of dataclasses | object with a `type` member naming the class (`AlertReceived` -> `alert_received`) |
| `Annotated[X, Bounds(...)]` / `Annotated[X, ContentFieldSpec(...)]` | X with those bounds |

Hex, not base64url, for bytes: every id the command line and the protocol documents show
is hex, so a person can compare what the API returns with what `cellrelay` prints, and a
prefix of an id (as the commands accept) is a prefix of its JSON form.

Objects that the API *receives* refuse unknown members (`additionalProperties: false`); the
ones it *sends* do not say so, so that clients written against this document keep working
when a later version adds a member (clients must ignore members they do not know).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Final, Literal, NewType, TypeAlias, Union

from cellrelay.protocol.cell._content import ContentError, ContentFieldSpec

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "BYTES_ENCODING",
    "Bounds",
    "Computed",
    "Converter",
    "FieldError",
    "Registry",
    "type_name",
]

Json: TypeAlias = Any  # a JSON value as json.loads returns it
BYTES_ENCODING: Final = "base16"
_HEX_CHARS: Final = "0123456789abcdef"
# What text fields may hold, as JSON Schema (ECMA-262) patterns mirroring ContentFieldSpec:
# no C0/C1 control characters but newline and tab; one-line fields refuse those and the
# Unicode line and paragraph separators too.
_TEXT_PATTERN: Final = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"
_LINE_PATTERN: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"
_BAD_TEXT: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_LINE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class FieldError(ValueError):
    """JSON that does not match its declaration: `path` names the field, `code` says how."""

    def __init__(self, path: str, code: str, message: str) -> None:
        super().__init__(f"{path or 'the body'}: {message}")
        self.path = path
        self.code = code


@dataclass(frozen=True, slots=True)
class Bounds:
    """Bounds of an API field, as `Annotated` metadata: lengths, ranges, one line, a pattern.

    `lo`/`hi` bound an integer's value, a string's length in characters, a byte string's
    length in bytes, or an array's length. `one_line` refuses line breaks (and, like every
    string, control characters). `description` goes into the schema.
    """

    lo: int | None = None
    hi: int | None = None
    one_line: bool = False
    pattern: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Computed:
    """A read-only property of a class that its JSON carries besides the fields.

    Registered with `Registry.computed`; decoding ignores it (it follows from the fields).
    """

    name: str
    annotation: object
    description: str = ""


def type_name(cls: type) -> str:
    """The `type` member naming a class in a tagged union: `AlertReceived` -> `alert_received`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


class Converter:
    """The schema, encoder and decoder of one annotation (built by `Registry.converter`)."""

    __slots__ = ("decode", "encode", "schema")

    def __init__(
        self,
        schema: dict[str, Json],
        encode: Callable[[Any], Json],
        decode: Callable[[Json, str], Any],
    ) -> None:
        self.schema = schema
        self.encode = encode
        self.decode = decode


def _printable(name: str) -> str:
    """A member name a client sent, safe to echo in a problem's `field`: control characters
    (and lone surrogates) escaped as JSON escapes them, so the text stays within its schema."""
    if not _BAD_TEXT.search(name):
        return name
    return json.dumps(name, ensure_ascii=True)[1:-1]


def _wrong(path: str, expected: str) -> FieldError:
    return FieldError(path, "WRONG_TYPE", f"expected {expected}")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_dataclass_type(tp: object) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


class Registry:
    """Builds converters and keeps the named schema components they refer to.

    One registry per document: `components` holds each dataclass's schema under its class
    name, for `#/components/schemas/NAME`. `namespace` resolves the string annotations of
    modules that use `from __future__ import annotations` with names imported only for
    type checking (the library's events do).
    """

    def __init__(self, *, namespace: Mapping[str, object] | None = None) -> None:
        """Start with no components; `namespace` adds names for resolving annotations."""
        self.components: dict[str, dict[str, Json]] = {}
        self._owners: dict[str, type] = {}
        self._cache: dict[object, Converter] = {}
        self._computed: dict[type, tuple[Computed, ...]] = {}
        # Names that modules commonly import only for type checking.
        self._namespace = {**vars(collections.abc), **vars(typing), **(namespace or {})}
        self._received: set[type] = set()
        self._tags: dict[type, str] = {}  # dataclass -> its `type` member, once in a union

    def computed(self, cls: type, *properties: Computed) -> None:
        """Declare read-only properties that `cls`'s JSON carries (before its first use)."""
        if cls in self._cache:  # pragma: no cover - a programming error caught in tests
            raise RuntimeError(f"{cls.__name__} is already converted")
        self._computed[cls] = properties

    def received(self, *classes: type) -> None:
        """Mark dataclasses as request bodies: their schemas refuse unknown members."""
        self._received.update(classes)

    def converter(self, tp: object) -> Converter:
        """The converter of an annotation (cached)."""
        try:
            return self._cache[tp]
        except KeyError:
            pass
        except TypeError:  # pragma: no cover - unhashable annotation objects
            return self._build(tp)
        built = self._build(tp)
        self._cache[tp] = built
        return built

    def encode(self, value: object, tp: object) -> Json:
        """`value` (of annotation `tp`) as JSON-ready values."""
        return self.converter(tp).encode(value)

    def decode(self, data: Json, tp: object, path: str = "") -> Any:  # noqa: ANN401 - the annotation's type
        """Check JSON against `tp` and build the value.

        Raises:
            FieldError: names the field and the error code.
        """
        return self.converter(tp).decode(data, path)

    def schema(self, tp: object) -> dict[str, Json]:
        """The JSON Schema of an annotation (a `$ref` for dataclasses)."""
        return self.converter(tp).schema

    # -- building ------------------------------------------------------------------------------

    def _build(self, tp: object) -> Converter:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *metadata = typing.get_args(tp)
            return self._annotated(base, metadata)
        if isinstance(tp, NewType):
            return self.converter(tp.__supertype__)
        if tp is type(None) or tp is None:
            return Converter({"type": "null"}, lambda v: None, self._decode_null)
        if origin in (Union, types.UnionType):
            return self._union(typing.get_args(tp))
        if origin is Literal:
            return self._literal(typing.get_args(tp))
        if origin in (list, tuple, frozenset, set, collections.abc.Sequence):
            return self._array(tp, origin)
        if origin in (dict, collections.abc.Mapping):
            key, value = typing.get_args(tp)
            return self._mapping(key, value)
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return self._enum(tp)
            if _is_dataclass_type(tp):
                return self._dataclass(tp)
            return self._scalar(tp, None)
        raise TypeError(f"cannot convert the annotation {tp!r}")

    def _annotated(self, base: object, metadata: list[object]) -> Converter:
        spec = next((m for m in metadata if isinstance(m, ContentFieldSpec)), None)
        bounds = next((m for m in metadata if isinstance(m, Bounds)), None)
        if spec is not None:
            return self._content_spec(base, spec)
        if bounds is not None:
            inner = base
            nullable = False
            if typing.get_origin(base) in (Union, types.UnionType):
                args = [a for a in typing.get_args(base) if a is not type(None)]
                nullable = len(args) != len(typing.get_args(base))
                inner = args[0] if len(args) == 1 else base
            converter = self._bounded(inner, bounds)
            return self._nullable(converter) if nullable else converter
        return self.converter(base)

    def _resolve_hints(self, cls: type) -> dict[str, object]:
        module = sys.modules.get(cls.__module__)
        globalns = {**self._namespace, **(vars(module) if module is not None else {})}
        return typing.get_type_hints(cls, globalns=globalns, include_extras=True)

    # -- scalars -------------------------------------------------------------------------------

    def _scalar(self, tp: type, bounds: Bounds | None) -> Converter:
        lo, hi = (bounds.lo, bounds.hi) if bounds is not None else (None, None)
        if tp is bool:
            return Converter({"type": "boolean"}, bool, self._decode_bool)
        if issubclass(tp, bool):  # pragma: no cover - bool cannot be subclassed
            raise TypeError(tp)
        if tp is int:
            schema: dict[str, Json] = {"type": "integer"}
            if lo is not None:
                schema["minimum"] = lo
            if hi is not None:
                schema["maximum"] = hi

            def decode_int(data: Json, path: str) -> int:
                if type(data) is not int:
                    # JSON has one number type: 5.0 is a whole number, and accepted.
                    if type(data) is float and data.is_integer():
                        data = int(data)
                    else:
                        raise _wrong(path, "an integer")
                if (lo is not None and data < lo) or (hi is not None and data > hi):
                    raise FieldError(path, "OUT_OF_RANGE", f"must be in {lo}..{hi}")
                return int(data)

            return Converter(schema, int, decode_int)
        if tp is float:

            def decode_float(data: Json, path: str) -> float:
                if type(data) not in (int, float):
                    raise _wrong(path, "a number")
                return float(data)

            return Converter({"type": "number"}, float, decode_float)
        if tp is str:
            return self._string(lo, hi, one_line=bool(bounds and bounds.one_line),
                                pattern=bounds.pattern if bounds else None)  # fmt: skip
        if tp is bytes:
            return self._bytes(lo, hi)
        raise TypeError(f"cannot convert the type {tp.__name__}")

    @staticmethod
    def _decode_null(data: Json, path: str) -> None:
        if data is not None:
            raise _wrong(path, "null")

    @staticmethod
    def _decode_bool(data: Json, path: str) -> bool:
        if type(data) is not bool:
            raise _wrong(path, "true or false")
        return bool(data)

    @staticmethod
    def _string(
        lo: int | None, hi: int | None, *, one_line: bool, pattern: str | None = None
    ) -> Converter:
        schema: dict[str, Json] = {"type": "string"}
        if lo is not None:
            schema["minLength"] = lo
        if hi is not None:
            schema["maxLength"] = hi
        schema["pattern"] = pattern or (_LINE_PATTERN if one_line else _TEXT_PATTERN)
        bad = _BAD_LINE if one_line else _BAD_TEXT
        own = re.compile(pattern) if pattern else None

        def decode(data: Json, path: str) -> str:
            if type(data) is not str:
                raise _wrong(path, "a string")
            if hi is not None and len(data) > hi:
                raise FieldError(path, "TOO_LARGE", f"{len(data)} characters, at most {hi}")
            if lo is not None and len(data) < lo:
                raise FieldError(path, "OUT_OF_RANGE", f"{len(data)} characters, at least {lo}")
            if bad.search(data):
                what = "a control character or line break" if one_line else "a control character"
                raise FieldError(path, "OUT_OF_RANGE", f"holds {what} it may not")
            if own is not None and not own.search(data):
                raise FieldError(path, "OUT_OF_RANGE", "does not have the expected form")
            return data

        return Converter(schema, str, decode)

    @staticmethod
    def _bytes(lo: int | None, hi: int | None) -> Converter:
        schema: dict[str, Json] = {
            "type": "string",
            "contentEncoding": BYTES_ENCODING,
            "pattern": "^([0-9a-f]{2})*$",
        }
        if lo is not None:
            schema["minLength"] = 2 * lo
        if hi is not None:
            schema["maxLength"] = 2 * hi

        def decode(data: Json, path: str) -> bytes:
            if type(data) is not str:
                raise _wrong(path, "lowercase hex")
            if hi is not None and len(data) > 2 * hi:
                raise FieldError(path, "TOO_LARGE", f"{len(data) // 2} bytes, at most {hi}")
            if len(data) % 2 or any(c not in _HEX_CHARS for c in data):
                raise FieldError(path, "WRONG_TYPE", "expected lowercase hex")
            if lo is not None and len(data) < 2 * lo:
                raise FieldError(path, "OUT_OF_RANGE", f"{len(data) // 2} bytes, at least {lo}")
            return bytes.fromhex(data)

        return Converter(schema, bytes.hex, decode)

    def _bounded(self, tp: object, bounds: Bounds) -> Converter:
        if isinstance(tp, NewType):
            return self._bounded(tp.__supertype__, bounds)
        if isinstance(tp, type) and not issubclass(tp, enum.Enum) and tp in (int, str, bytes):
            converter = self._scalar(tp, bounds)
        elif typing.get_origin(tp) in (list, tuple, frozenset, set):
            converter = self._array(tp, typing.get_origin(tp), bounds)
        else:
            converter = self.converter(tp)
        if bounds.description:
            converter = Converter(
                {**converter.schema, "description": bounds.description},
                converter.encode,
                converter.decode,
            )
        return converter

    def _content_spec(self, base: object, spec: ContentFieldSpec) -> Converter:
        """A field the protocol bounds with a `ContentFieldSpec` (protocol/cell/_content.py)."""
        kind = spec.kind
        if kind == "uint":
            converter = self._scalar(int, Bounds(lo=spec.lo, hi=spec.hi))
        elif kind == "bytes":
            converter = self._bytes(spec.lo, spec.hi)
        elif kind in ("text", "line"):
            converter = self._string(spec.lo, spec.hi, one_line=kind == "line")
        elif kind == "choice":
            assert spec.choices is not None  # noqa: S101 - ContentFieldSpec guarantees it
            converter = self._enum(spec.choices)
        else:  # "ids"
            item = self._bytes(16, 16)
            converter = self._array_of(item, tuple, Bounds(lo=spec.lo, hi=spec.hi), unique=True)
        return self._nullable(converter) if spec.optional else converter

    def _enum(self, tp: type[enum.Enum]) -> Converter:
        values = [member.value for member in tp]
        by_value = {member.value: member for member in tp}
        is_str = all(isinstance(v, str) for v in values)
        schema: dict[str, Json] = {"type": "string" if is_str else "integer", "enum": values}

        def decode(data: Json, path: str) -> enum.Enum:
            if type(data) is not (str if is_str else int):
                raise _wrong(path, "one of " + ", ".join(map(str, values)))
            try:
                return by_value[data]
            except KeyError:
                raise FieldError(
                    path, "OUT_OF_RANGE", "must be one of " + ", ".join(map(str, values))
                ) from None

        return Converter(schema, lambda v: v.value, decode)

    @staticmethod
    def _literal(values: tuple[object, ...]) -> Converter:
        schema: dict[str, Json] = (
            {"const": values[0]} if len(values) == 1 else {"enum": list(values)}
        )
        if all(isinstance(v, str) for v in values):
            schema["type"] = "string"

        def decode(data: Json, path: str) -> object:
            if data not in values or type(data) is bool:
                raise FieldError(
                    path, "OUT_OF_RANGE", "must be one of " + ", ".join(map(str, values))
                )
            return data

        return Converter(schema, lambda v: v, decode)

    # -- containers ----------------------------------------------------------------------------

    def _nullable(self, inner: Converter) -> Converter:
        schema: dict[str, Json] = (
            {"anyOf": [inner.schema, {"type": "null"}]}
            if "$ref" in inner.schema or "type" not in inner.schema
            else {**inner.schema, "type": [inner.schema["type"], "null"]}
        )
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]

        def decode(data: Json, path: str) -> object:
            return None if data is None else inner.decode(data, path)

        return Converter(schema, lambda v: None if v is None else inner.encode(v), decode)

    def _union(self, args: tuple[object, ...]) -> Converter:
        members = [a for a in args if a is not type(None)]
        if len(members) != len(args) and len(members) == 1:
            return self._nullable(self.converter(members[0]))
        if len(members) != len(args):
            return self._nullable(self._union(tuple(members)))
        if not all(_is_dataclass_type(m) for m in members):
            raise TypeError(f"only unions of dataclasses are tagged: {args!r}")
        return self._tagged(typing.cast("list[type]", members))

    def _tagged(self, classes: list[type]) -> Converter:
        """A union of dataclasses: the JSON object carries `type`, the class's snake-case name.

        A class that is part of a union anywhere carries its `type` everywhere (also where
        it appears on its own), so one class has one JSON form.
        """
        by_tag: dict[str, type] = {}
        for cls in classes:
            by_tag[self._tag(cls)] = cls
        converters = {cls: self.converter(cls) for cls in classes}
        schema: dict[str, Json] = {
            "oneOf": [converters[cls].schema for cls in classes],
            "discriminator": {
                "propertyName": "type",
                "mapping": {tag: converters[cls].schema["$ref"] for tag, cls in by_tag.items()},
            },
        }

        def encode(value: object) -> Json:
            return converters[type(value)].encode(value)

        def decode(data: Json, path: str) -> object:
            if type(data) is not dict:
                raise _wrong(path, "an object")
            tag = data.get("type")
            cls = by_tag.get(tag) if isinstance(tag, str) else None
            if cls is None:
                raise FieldError(
                    _join(path, "type"), "OUT_OF_RANGE", "must be one of " + ", ".join(by_tag)
                )
            return converters[cls].decode(data, path)

        return Converter(schema, encode, decode)

    def _tag(self, cls: type) -> str:
        """Give a dataclass its `type` member (once); return the tag."""
        tag = type_name(cls)
        if cls not in self._tags:
            self.converter(cls)  # its component exists from here on
            self._tags[cls] = tag
            component = self.components[cls.__name__]
            component["properties"] = {
                "type": {"type": "string", "const": tag},
                **component["properties"],
            }
            component["required"] = ["type", *component.get("required", [])]
        return tag

    def _array(self, tp: object, origin: object, bounds: Bounds | None = None) -> Converter:
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"only tuple[X, ...] is supported, not {tp!r}")
        item = self.converter(args[0])
        kind: type = {tuple: tuple, frozenset: frozenset, set: set}.get(origin, list)  # type: ignore[call-overload]
        return self._array_of(item, kind, bounds, unique=kind in (frozenset, set))

    @staticmethod
    def _array_of(
        item: Converter, kind: type, bounds: Bounds | None, *, unique: bool = False
    ) -> Converter:
        schema: dict[str, Json] = {"type": "array", "items": item.schema}
        lo, hi = (bounds.lo, bounds.hi) if bounds is not None else (None, None)
        if lo is not None:
            schema["minItems"] = lo
        if hi is not None:
            schema["maxItems"] = hi
        if unique:
            schema["uniqueItems"] = True
        encode_item = item.encode

        def encode(value: Any) -> Json:  # noqa: ANN401 - an iterable of the item's type
            items = sorted(value, key=repr) if kind in (frozenset, set) else value
            return [encode_item(v) for v in items]

        def decode(data: Json, path: str) -> object:
            if type(data) is not list:
                raise _wrong(path, "an array")
            if hi is not None and len(data) > hi:
                raise FieldError(path, "TOO_LARGE", f"{len(data)} items, at most {hi}")
            if lo is not None and len(data) < lo:
                raise FieldError(path, "OUT_OF_RANGE", f"{len(data)} items, at least {lo}")
            values = [item.decode(v, f"{path}[{i}]") for i, v in enumerate(data)]
            if unique and len(set(values)) != len(values):
                raise FieldError(path, "DUPLICATE_FIELD", "an item is repeated")
            return kind(values)

        return Converter(schema, encode, decode)

    def _mapping(self, key: object, value: object) -> Converter:
        key_converter = self.converter(key)
        if key_converter.schema.get("type") != "string":
            raise TypeError(f"mapping keys must be str or bytes, not {key!r}")
        item = self.converter(value)
        schema: dict[str, Json] = {
            "type": "object",
            "additionalProperties": item.schema,
            "propertyNames": {k: v for k, v in key_converter.schema.items() if k != "type"},
        }
        encode_key, encode_item = key_converter.encode, item.encode

        def encode(data: Mapping[object, object]) -> Json:
            return {encode_key(k): encode_item(v) for k, v in data.items()}

        def decode(data: Json, path: str) -> object:
            if type(data) is not dict:
                raise _wrong(path, "an object")
            return {
                key_converter.decode(k, _join(path, k)): item.decode(v, _join(path, k))
                for k, v in data.items()
            }

        return Converter(schema, encode, decode)

    def _dataclass(self, cls: type) -> Converter:
        name = cls.__name__
        owner = self._owners.setdefault(name, cls)
        if owner is not cls:  # pragma: no cover - caught by the schema tests
            raise TypeError(f"two classes are called {name}: {owner!r} and {cls!r}")
        ref: dict[str, Json] = {"$ref": f"#/components/schemas/{name}"}
        # Registered before the fields are converted, so a class may refer to itself.
        component: dict[str, Json] = {"type": "object", "properties": {}}
        self.components[name] = component
        fields_by_name: dict[str, Converter] = {}
        required: list[str] = []
        hints = self._resolve_hints(cls)
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if doc:
            component["description"] = doc
        properties: dict[str, Json] = component["properties"]
        fields = [f for f in dataclasses.fields(cls) if not f.name.startswith("_")]
        for f in fields:
            converter = self.converter(hints[f.name])
            fields_by_name[f.name] = converter
            properties[f.name] = converter.schema
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        # A subclass carries its base's computed members too (AlertReceipts: ReceiptCounts).
        computed = next((self._computed[c] for c in cls.__mro__ if c in self._computed), ())
        computed_encoders = []
        for prop in computed:
            converter = self.converter(prop.annotation)
            schema = {**converter.schema, "readOnly": True}
            if prop.description:
                schema["description"] = prop.description
            properties[prop.name] = schema
            required.append(prop.name)
            computed_encoders.append((prop.name, converter.encode))
        if required:
            component["required"] = required
        if cls in self._received:
            component["additionalProperties"] = False
        encoders = [(f.name, fields_by_name[f.name].encode) for f in fields]
        init_names = {f.name for f in fields if f.init}
        computed_names = {p.name for p in computed}

        tags = self._tags

        def encode(value: object) -> Json:
            out = {n: enc(getattr(value, n)) for n, enc in encoders}
            tag = tags.get(cls)
            if tag is not None:
                out = {"type": tag, **out}
            for n, enc in computed_encoders:
                out[n] = enc(getattr(value, n))
            return out

        def decode(data: Json, path: str) -> object:
            if type(data) is not dict:
                raise _wrong(path, "an object")
            tag = tags.get(cls)
            if tag is not None and data.get("type") != tag:
                raise FieldError(_join(path, "type"), "OUT_OF_RANGE", f"must be {tag!r}")
            for key in data:
                if key == "type" and tag is not None:
                    continue
                if key not in fields_by_name and key not in computed_names:
                    raise FieldError(
                        _join(path, _printable(str(key))), "EXTRA_FIELD", "is not a known field"
                    )
            kwargs: dict[str, object] = {}
            for field_name in required:
                if (
                    field_name not in data
                    and field_name not in computed_names
                    and field_name != "type"
                ):
                    raise FieldError(_join(path, field_name), "MISSING_FIELD", "is required")
            for field_name, converter in fields_by_name.items():
                if field_name in data and field_name in init_names:
                    kwargs[field_name] = converter.decode(data[field_name], _join(path, field_name))
            try:
                return cls(**kwargs)
            except ContentError as exc:
                raise FieldError(path, exc.code.name, str(exc)) from None
            except (TypeError, ValueError) as exc:
                raise FieldError(path, "OUT_OF_RANGE", str(exc)) from None

        return Converter(ref, encode, decode)
