"""What a step may return, turned into tensors the same way on every transport.

A returned Tensor is carried as it is or refused as the step's error (MalformedOutput, naming
the step and the tensor): parameters that do not encode as JSON, or an array whose dtype is
not its datatype's, would otherwise be lost or cast on Kafka while the embedded bus passes
them on. Numpy string and bytes arrays (BYTES) reach the next step as object arrays of str /
bytes, which is what Kafka decodes them to.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import numpy as np
import pytest

from engine.embedded import EmbeddedBus
from engine.engine import Engine, RequestError
from engine.kafka import KafkaTransport
from engine.record import Record
from engine.spec import load_pipelines
from engine.steps import MalformedOutput, to_tensors
from engine.tensors import Tensor, TensorError
from engine.topics import Topics

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

# s produces y from the request's x (how depends on x), t gets y and returns it as z; the
# answer is both
PIPELINE = {
    "metadata": {"name": "outs"},
    "spec": {
        "steps": [{"name": "s"}, {"name": "t", "inputs": ["s"]}],
        "output": {"steps": ["s", "t"]},
    },
}

# one kind of step output per request value x
CASES: dict[int, Any] = {
    1: lambda: {"y": Tensor("y", "FP64", np.array([2.0]), {"scale": np.float32(0.5)})},
    2: lambda: {"y": Tensor("y", "INT8", np.array([2.7]))},
    3: lambda: {"y": np.array(["x", "yz"])},
    4: lambda: {"y": np.array([b"x", b"yz"])},
    5: lambda: {"y": Tensor("other", "BYTES", np.array([["ab"], ["c"]]))},
    6: lambda: {"y": Tensor("y", "FP64", np.array([2.0]), {"scale": 0.5, "pair": (1, 2)})},
    7: lambda: {"y": np.array([1, 2], dtype=np.int8)},
    8: lambda: {"y": np.array([np.str_("a"), np.bytes_(b"b"), "c"], dtype=object)},
}


def make_steps(seen: list[np.ndarray]) -> dict[str, Any]:
    def s(inputs: dict[str, np.ndarray]) -> Any:
        return CASES[int(inputs["x"][0])]()

    def t(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["y"])
        return {"z": inputs["y"]}

    return {"s": s, "t": t}


def request(case: int) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [case]}]}


def described(array: np.ndarray) -> tuple[str, tuple[int, ...], list[tuple[str, Any]]]:
    """dtype, shape and each element with its Python type: what a step can tell apart."""
    return str(array.dtype), array.shape, [(type(v).__name__, v) for v in array.flat]


async def answers(engine: Engine, seen: list[np.ndarray]) -> dict[int, Any]:
    """Per case: the error, or the answer's y (from s) and what step t was given and
    returned (z), described."""
    out: dict[int, Any] = {}
    for case in CASES:
        seen.clear()
        result = await engine.infer("outs", request(case), timeout=30)
        if not result.ok:
            out[case] = ("error", result.error)
            continue
        y, z = result.outputs
        out[case] = (y.datatype, described(y.data), y.parameters,
                     [described(a) for a in seen], (z.name, z.datatype, *described(z.data)))
    return out


def run_embedded() -> tuple[dict[int, Any], list[Record]]:
    async def main() -> tuple[dict[int, Any], list[Record]]:
        bus = EmbeddedBus()
        errors: list[Record] = []
        bus.tap(lambda topic, r: errors.append(r) if topic.endswith("errors.errors") else None)
        seen: list[np.ndarray] = []
        async with Engine(load_pipelines(PIPELINE), make_steps(seen), transport=bus) as engine:
            return await answers(engine, seen), errors

    return asyncio.run(asyncio.wait_for(main(), 60))


@pytest.fixture(scope="module")
def embedded() -> tuple[dict[int, Any], list[Record]]:
    return run_embedded()


# -- 1: parameters that do not encode as JSON -------------------------------------------------

def test_parameters_that_are_not_json_are_the_steps_error(
        embedded: tuple[dict[int, Any], list[Record]]) -> None:
    results, errors = embedded
    kind, error = results[1]
    assert kind == "error"
    assert "MalformedOutput" in error and "step 's'" in error and "tensor 'y'" in error
    assert "parameters cannot be encoded as JSON" in error and "float32" in error
    # an error record on the errors topic, from the step, as for any failing step
    assert [e.lineage.origin for e in errors] == ["s.errors", "s.errors"]  # cases 1 and 2


def test_parameters_reach_the_next_step_as_json_decodes_them(
        embedded: tuple[dict[int, Any], list[Record]]) -> None:
    datatype, _, parameters, _, _ = embedded[0][6]
    assert datatype == "FP64"
    assert parameters == {"scale": 0.5, "pair": [1, 2]}  # the tuple is a JSON list, as on Kafka


# -- 2: an array whose dtype is not its datatype's --------------------------------------------

def test_an_array_of_another_dtype_than_its_datatype_is_refused_not_cast(
        embedded: tuple[dict[int, Any], list[Record]]) -> None:
    kind, error = embedded[0][2]
    assert kind == "error"
    assert "MalformedOutput" in error and "step 's'" in error and "tensor 'y'" in error
    assert "datatype INT8 needs dtype int8" in error and "float64" in error


# -- 3: numpy string / bytes arrays for BYTES --------------------------------------------------

@pytest.mark.parametrize("case, values", [(3, [("str", "x"), ("str", "yz")]),
                                          (4, [("bytes", b"x"), ("bytes", b"yz")])],
                         ids=["str-array", "bytes-array"])
def test_numpy_string_arrays_reach_the_next_step_as_object_arrays(
        embedded: tuple[dict[int, Any], list[Record]], case: int, values: list[Any]) -> None:
    datatype, answer, _, seen, passed_on = embedded[0][case]
    assert datatype == "BYTES"
    assert answer == ("object", (2,), values)  # s's output
    assert seen == [("object", (2,), values)]  # what step t was given
    assert passed_on == ("z", "BYTES", "object", (2,), values)  # and returned as it is


def test_a_bytes_tensor_of_a_numpy_string_array_keeps_its_shape_as_objects(
        embedded: tuple[dict[int, Any], list[Record]]) -> None:
    datatype, _, _, seen, _ = embedded[0][5]
    assert datatype == "BYTES"
    assert seen == [("object", (2, 1), [("str", "ab"), ("str", "c")])]


def test_numpy_str_and_bytes_scalars_reach_the_next_step_as_python_ones(
        embedded: tuple[dict[int, Any], list[Record]]) -> None:
    """An object array of np.str_ / np.bytes_ (what indexing a numpy string array gives)
    reaches the next step as str / bytes, as Kafka decodes it (the bus passed np.str_ on)."""
    results, _ = embedded
    _, _, _, (given,), _ = results[8]
    assert given == ("object", (3,), [("str", "a"), ("bytes", b"b"), ("str", "c")])


def test_the_common_case_is_untouched(embedded: tuple[dict[int, Any], list[Record]]) -> None:
    int8 = ("int8", (2,), [("int8", 1), ("int8", 2)])
    assert embedded[0][7] == ("INT8", int8, None, [int8], ("z", "INT8", *int8))


# -- to_tensors itself -------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    (Tensor("y", "FP64", np.array([1.0]), {"f": np.float64}), "cannot be encoded as JSON"),
    (Tensor("y", "FP64", np.array([1.0]), [("a", 1)]), "parameters are a list, not a mapping"),
    (Tensor("y", "FP32", np.array([1.0])), "datatype FP32 needs dtype float32"),
    (Tensor("y", "FP64", np.array([1.0], ">f8")), "datatype FP64 needs dtype float64"),
    (Tensor("y", "BOOL", np.array([0, 1])), "datatype BOOL needs dtype bool"),
    (Tensor("y", "BYTES", np.array([1.0])), "needs an object array of bytes/str"),
    (Tensor("y", "BYTES", np.array([b"a", 1], dtype=object)), "not bytes/str"),
    (Tensor("y", "FP8", np.array([1.0])), "unknown datatype 'FP8'"),
    (Tensor("y", "FP64", [1.0]), "data is a list, not a numpy array"),
], ids=["params-type", "params-list", "fp32-fp64", "big-endian", "bool-int", "bytes-float",
        "bytes-object", "unknown-datatype", "list-data"])
def test_to_tensors_refuses_a_tensor_no_transport_carries_as_it_is(
        value: Tensor, message: str) -> None:
    with pytest.raises(MalformedOutput, match="step 'st' returned malformed tensor 'out'") as exc:
        to_tensors({"out": value}, "st")
    assert message in str(exc.value)
    assert isinstance(exc.value, TensorError)


def test_to_tensors_keeps_a_well_formed_tensor_as_it_is_in_an_array_of_its_own() -> None:
    ok = Tensor("out", "FP32", np.array([1.0], np.float32), {"content_type": "np"})
    (back,) = to_tensors({"out": ok}, "st")
    assert back.datatype == "FP32" and back == ok and back.data is not ok.data
    assert back.parameters == {"content_type": "np"}
    bare = Tensor("out", "INT64", np.array([3]))
    (again,) = to_tensors({"out": bare}, "st")
    assert again == bare and again.data is not bare.data
    array = np.array([1.0, 2.0])
    (plain,) = to_tensors({"out": array}, "st")
    assert plain.data.tolist() == [1.0, 2.0] and not np.shares_memory(plain.data, array)
    (scalar,) = to_tensors({"out": Tensor("out", "FP64", np.float64(2.5))}, "st")
    assert scalar.data.shape == () and scalar.data.dtype == np.float64
    (empty,) = to_tensors({"out": Tensor("out", "FP64", np.array([1.0]), {})}, "st")
    assert empty.parameters is None  # as Kafka carries empty parameters: none
    # values JSON can encode but not give back as they are come back as JSON decodes them
    odd = {"f": np.float64(0.5), "t": (1, "a"), 3: None, "n": {"k": [True]}}
    (decoded,) = to_tensors({"out": Tensor("out", "FP64", np.array([1.0]), odd)}, "st")
    assert decoded.parameters == {"f": 0.5, "t": [1, "a"], "3": None, "n": {"k": [True]}}
    assert type(decoded.parameters["f"]) is float


def test_to_tensors_normalises_numpy_string_arrays_like_the_kafka_decoding() -> None:
    arrays = {"u": np.array([["a", "bc"]]), "s": np.array([b"a\x00", b"bc"]),
              "t": Tensor("t", "BYTES", np.array("zz"))}
    tensors = to_tensors(arrays, "st")
    decoded = Record.decode(*Record(_lineage(), tensors).encode()).tensors
    for mine, kafka in zip(tensors, decoded, strict=True):
        assert mine.datatype == kafka.datatype == "BYTES"
        assert described(mine.data) == described(kafka.data)


class BufferStep:
    """Refills one preallocated output buffer each call, as model-serving code often does."""

    def __init__(self) -> None:
        self.buffer = np.zeros(2)
        self.tensor = Tensor("t", "FP64", np.zeros(1))

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        self.buffer[:] = [inputs["x"][0], inputs["x"][0] + 1]
        self.tensor.data[0] = inputs["x"][0] * 10
        return {"y": self.buffer, "t": self.tensor}


def test_a_step_may_refill_the_arrays_it_returned() -> None:
    """Each answer (and what the next step read) keeps the values of its own call: the step's
    outputs are copied when it returns them; before, every kept answer showed the last call's."""
    pipes = load_pipelines({"metadata": {"name": "buf"}, "spec": {
        "steps": [{"name": "s"}, {"name": "t", "inputs": ["s.outputs.y"]}],
        "output": {"steps": ["s", "t"]}}})

    async def main() -> list[Any]:
        async with Engine(pipes, {"s": BufferStep, "t": lambda x: {"z": x["y"] * 1}}) as eng:
            return [await eng.infer("buf", [Tensor("x", "FP64", np.array([float(i)]))], timeout=5)
                    for i in range(3)]

    for i, answer in enumerate(asyncio.run(main())):
        assert answer.ok, answer.error
        values = {t.name: t.data.tolist() for t in answer.outputs}
        assert values == {"y": [i, i + 1], "t": [i * 10], "z": [i, i + 1]}


# -- a request's own tensors: the same checks, before the request is sent -------------------

def test_a_request_tensor_no_transport_carries_as_it_is_is_refused() -> None:
    engine = Engine(load_pipelines(PIPELINE), {"s": lambda x: x, "t": lambda x: x})
    for bad, message in [
        (Tensor("x", "INT8", np.array([2.7])), "datatype INT8 needs dtype int8"),
        (Tensor("x", "FP64", [1.0]), "data is a list, not a numpy array"),  # type: ignore[arg-type]
        (Tensor("x", "FP9", np.array([1.0])), "unknown datatype 'FP9'"),
        (Tensor("x", "BYTES", np.array([1, 2], dtype=object)), "not bytes/str"),
        (Tensor("x", "FP64", np.array([1.0]), {"k": object()}), "parameters"),
    ]:
        with pytest.raises(RequestError, match="request to 'outs': tensor 'x': ") as exc:
            engine.make_request("outs", [Tensor("ok", "FP64", np.array([0.0])), bad])
        assert message in str(exc.value)


def test_a_request_tensor_is_normalised_like_a_step_output_or_kept_as_it_is() -> None:
    engine = Engine(load_pipelines(PIPELINE), {"s": lambda x: x, "t": lambda x: x})
    good = (Tensor("x", "FP64", np.array([1.0])), Tensor("b", "BYTES", np.array(["a"], object)))
    assert engine.make_request("outs", good).tensors is good
    (text,) = engine.make_request("outs", [Tensor("u", "BYTES", np.array(["a", "bc"]))]).tensors
    assert text.data.dtype == object and text.data.tolist() == ["a", "bc"]
    (scalar,) = engine.make_request("outs", [Tensor("f", "FP64", np.float64(2.5))]).tensors
    assert scalar.data.shape == () and scalar.data.dtype == np.float64


def _lineage() -> Any:
    from engine.lineage import Lineage
    return Lineage("req-1", "1" * 32, "2" * 16, "outs", "s.outputs")


# -- the same on Kafka -------------------------------------------------------------------------

def test_kafka_answers_every_case_as_the_embedded_bus_does(
        kafka_bootstrap: str, embedded: tuple[dict[int, Any], list[Record]]) -> None:
    """Case 1 was lost on Kafka (publish raised in the delivery handler, the client timed
    out), case 2 cast to int8, cases 3-5 reached step t as other arrays than on the bus."""
    async def main() -> dict[int, Any]:
        topics = Topics(prefix=f"stepout{uuid.uuid4().hex[:8]}")
        transport = KafkaTransport(kafka_bootstrap, group_id=topics.prefix, partitions=1)
        seen: list[np.ndarray] = []
        async with Engine(load_pipelines(PIPELINE), make_steps(seen), transport=transport,
                          topics=topics) as engine:
            return await answers(engine, seen)

    on_kafka = asyncio.run(asyncio.wait_for(main(), 120))
    assert on_kafka[1][0] == "error" and "parameters cannot be encoded as JSON" in on_kafka[1][1]
    assert on_kafka == embedded[0]
