"""tf.train.Example encode/decode through protobuf (upb), without TensorFlow.

The message types are declared here from tensorflow/core/example/{example,feature}.proto into a
private descriptor pool, so they are wire-identical to TensorFlow's and never clash with
TensorFlow's own registration when both are imported.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from petalnet.errors import ExampleError

_F = descriptor_pb2.FieldDescriptorProto


def _message_types():
    fdp = descriptor_pb2.FileDescriptorProto(name="tensorflow/core/example/example.proto",
                                             package="tensorflow", syntax="proto3")

    def add(name, *fields, nested=None, oneof=None):
        m = fdp.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for fname, number, ftype, label, type_name, in_oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if in_oneof:
                f.oneof_index = 0
        if nested:
            nested(m)
        return m

    rep, opt = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    add("BytesList", ("value", 1, _F.TYPE_BYTES, rep, None, False))
    add("FloatList", ("value", 1, _F.TYPE_FLOAT, rep, None, False))
    add("Int64List", ("value", 1, _F.TYPE_INT64, rep, None, False))
    add("Feature", ("bytes_list", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", True),
        ("float_list", 2, _F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", True),
        ("int64_list", 3, _F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", True), oneof="kind")

    def feature_entry(m):
        e = m.nested_type.add(name="FeatureEntry")
        e.options.map_entry = True
        e.field.add(name="key", number=1, type=_F.TYPE_STRING, label=opt)
        e.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")

    add("Features", ("feature", 1, _F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", False),
        nested=feature_entry)
    add("Example", ("features", 1, _F.TYPE_MESSAGE, opt, ".tensorflow.Features", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


Example = _message_types()

# kind in a spec -> the Feature oneof field that carries it
KINDS = {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}


def parse(payload: bytes, spec: dict[str, str]) -> dict:
    """Decode a serialized Example and pull out the features named in ``spec``.

    ``spec`` maps feature key to ``bytes``, ``int64`` or ``float`` for a single value,
    or the same with ``[]`` (``int64[]``) for a list. Raises ExampleError naming the feature.
    """
    ex = Example()
    try:
        ex.ParseFromString(payload)
    except message.DecodeError as e:
        raise ExampleError(f"record is not a tf.train.Example ({e})") from None
    feats = ex.features.feature
    out = {}
    for key, kind in spec.items():
        scalar = not kind.endswith("[]")
        field = KINDS[kind.rstrip("[]")]
        if key not in feats:
            raise ExampleError(f"feature {key!r} is missing (record has: {', '.join(sorted(feats)) or 'none'})")
        have = feats[key].WhichOneof("kind")
        if have != field:
            raise ExampleError(f"feature {key!r} is {have or 'empty'}, expected {field}")
        values = getattr(feats[key], field).value
        if scalar:
            if len(values) != 1:
                raise ExampleError(f"feature {key!r} has {len(values)} values, expected 1")
            out[key] = values[0]
        else:
            out[key] = list(values)
    return out


def keys(payload: bytes) -> dict[str, str]:
    """The feature keys of a serialized Example and their kinds (for error messages and inspect)."""
    ex = Example()
    try:
        ex.ParseFromString(payload)
    except message.DecodeError as e:
        raise ExampleError(f"record is not a tf.train.Example ({e})") from None
    return {k: (f.WhichOneof("kind") or "empty") for k, f in ex.features.feature.items()}


def encode(features: dict) -> bytes:
    """Serialize a dict as an Example: bytes/str -> bytes_list, int -> int64_list, float -> float_list.

    Lists of one of those become lists. Keys are written sorted so the output is deterministic.
    """
    ex = Example()
    for key in sorted(features):
        value = features[key]
        values = value if isinstance(value, (list, tuple)) else [value]
        f = ex.features.feature[key]
        if all(isinstance(v, (bytes, str)) for v in values):
            f.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
        elif all(isinstance(v, int) for v in values):
            f.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) for v in values):
            f.float_list.value.extend(values)
        else:
            raise TypeError(f"feature {key!r}: cannot encode {type(values[0]).__name__}")
    return ex.SerializeToString(deterministic=True)
