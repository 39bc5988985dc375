"""The Kafka record encoding: binary framing of tensors, lineage headers, malformed input."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from engine.lineage import Lineage
from engine.processor import step_inputs
from engine.record import MAGIC, Record
from engine.tensors import DTYPES, Tensor

LINEAGE = Lineage("rid", "a" * 32, "b" * 16, "p", "s.outputs", 0, ("rid/p/inputs/0",))


def round_trip(*tensors: Tensor) -> Record:
    value, headers = Record(LINEAGE, tensors).encode()
    assert value[:2] == MAGIC
    return Record.decode(value, headers)


@pytest.mark.parametrize("datatype", [d for d in DTYPES if d != "BYTES"])
def test_every_numeric_datatype_round_trips(datatype: str) -> None:
    data = (np.arange(12) % 2).astype(DTYPES[datatype]).reshape(3, 4)
    back = round_trip(Tensor(f"t-{datatype}", datatype, data)).tensors[0]
    assert back == Tensor(f"t-{datatype}", datatype, data)
    assert back.data.dtype == DTYPES[datatype] and back.data.shape == (3, 4)
    # a view of the record's bytes; step code is given a copy it may change in place
    step_input = step_inputs((back,))[back.name]
    step_input[0, 0] = 1
    assert back == Tensor(f"t-{datatype}", datatype, data)


def test_shapes_layouts_and_parameters() -> None:
    tensors = (
        Tensor.from_array("scalar", np.float64(2.5)),
        Tensor.from_array("empty", np.zeros((0, 3), np.float32)),
        Tensor.from_array("transposed", np.arange(6.0).reshape(2, 3).T),
        Tensor("widened", "FP32", np.arange(3)),  # data of another dtype is converted
        Tensor("p", "INT32", np.array([1], np.int32), {"content_type": "np", "n": 1}),
    )
    back = round_trip(*tensors).tensors
    assert [t.name for t in back] == [t.name for t in tensors]
    assert back[0].data.shape == () and float(back[0].data) == 2.5
    assert back[1].data.shape == (0, 3)
    assert back[2].data.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert back[3].data.dtype == np.float32 and back[3].data.tolist() == [0.0, 1.0, 2.0]
    assert back[4].parameters == {"content_type": "np", "n": 1}


def test_bytes_elements_keep_their_type() -> None:
    data = np.array(["héllo", b"\xff\x00raw", ""], dtype=object).reshape(1, 3)
    back = round_trip(Tensor("b", "BYTES", data), Tensor.from_array("u", np.array(["x", "yz"])))
    assert back.tensors[0].data.tolist() == [["héllo", b"\xff\x00raw", ""]]
    assert back.tensors[1].datatype == "BYTES" and back.tensors[1].data.tolist() == ["x", "yz"]


def test_error_and_absent_records() -> None:
    for kind, text in (("error", "step 's' failed: ü"), ("absent", "skipped: routed")):
        value, headers = Record(LINEAGE, kind=kind, error=text).encode()
        back = Record.decode(value, headers)
        assert (back.kind, back.error, back.tensors) == (kind, text, ())


def test_json_values_from_outside_producers_are_read() -> None:
    body = {"kind": "data", "tensors": [{"name": "x", "datatype": "FP64", "shape": [2],
                                         "data": [1, 2]}]}
    back = Record.decode(json.dumps(body).encode(), LINEAGE.to_headers())
    assert back.tensors[0] == Tensor.from_array("x", np.array([1.0, 2.0]))


def test_malformed_values_raise_value_error_only() -> None:
    value, headers = Record(LINEAGE, (
        Tensor.from_array("a", np.arange(6, dtype=np.int64).reshape(2, 3)),
        Tensor("b", "BYTES", np.array(["x", b"y"], dtype=object), {"k": 1}),
    )).encode()
    rng = random.Random(7)
    errors = 0
    for _ in range(3000):  # flipped bytes, truncations: never anything but ValueError
        broken = bytearray(value)
        for _ in range(rng.randint(1, 3)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        if rng.random() < 0.3:
            broken = broken[:rng.randrange(len(broken))]
        try:
            Record.decode(bytes(broken), headers)
        except ValueError:
            errors += 1
    assert errors > 1000
    for bad in (b"", b"\xfc", b"\xfc\x01", value + b"x", value[:-1], b"\xfc\x02" + value[2:]):
        with pytest.raises(ValueError):
            Record.decode(bad, headers)


def test_lineage_headers_parents_and_visits() -> None:
    for parents in ((), ("a/p/x.outputs/0",), ('quote"d/p/x/0', "back\\slash/p/y/1"), ("é/p/z/0",)):
        lin = Lineage("r", "c" * 32, "d" * 16, "p", "x.outputs", 3, parents, {"x": 3})
        headers = lin.to_headers()
        assert json.loads(dict(headers)["flowcause-parents"]) == list(parents)
        back = Lineage.from_headers(headers)
        assert back.to_dict() == lin.to_dict() and back.visits == {"x": 3}
    for header, bad in (("flowcause-parents", b"[1]"), ("flowcause-parents", b'["a"'),
                        ("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01"),
                        ("flowcause-generation", b"x"),
                        # valid JSON, not a mapping of visits: it crashed the delivery, and the
                        # record was lost without an error record (poison)
                        ("flowcause-visits", b"[1, 2]"), ("flowcause-visits", b'{"a": -1}'),
                        ("flowcause-visits", b'{"a": "1"}'), ("flowcause-visits", b"{")):
        headers = dict(LINEAGE.to_headers())
        headers[header] = bad
        with pytest.raises(ValueError):
            Lineage.from_headers(headers.items())
