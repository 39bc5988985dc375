"""The recording policy: whole values up to a size, summaries beyond, and how they read back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.engine import Engine
from engine.spec import load_pipelines
from engine.tensors import Tensor
from tracing.collector import Collector
from tracing.recorder import StoreRecorder
from tracing.store import TraceStore
from tracing.summary import summarise, tensor_hash

RNG = np.random.default_rng(7)


def tensor(name: str, data: np.ndarray) -> Tensor:
    return Tensor.from_array(name, data)


def describe(tensors: list[Tensor], max_values: int = 64) -> dict[str, pa.Array]:
    return summarise([t.datatype for t in tensors], [t.data for t in tensors], max_values)


def hash_of(t: Tensor) -> str:
    return tensor_hash(t.datatype, t.data)


def test_size_one_tensors_are_kept_whole() -> None:
    cols = describe([tensor("a", np.array([2.5], np.float32)),
                      tensor("b", np.array([[7]], np.int64)),
                      tensor("c", np.array([True])),
                      tensor("d", np.array(["YES"], dtype=object))])
    assert cols["value"].to_pylist() == [2.5, 7.0, 1.0, None]
    assert cols["text"].to_pylist() == [None, None, None, "YES"]
    assert cols["mean"].null_count == 4 and cols["hash"].null_count == 4
    assert cols["shape"].to_pylist() == [[1], [1, 1], [1], [1]]


def test_vectors_are_summarised_ignoring_nans() -> None:
    data = RNG.normal(size=(5, 12))
    data[1, [2, 7]] = np.nan
    data[3, :] = np.nan
    cols = describe([tensor(f"t{i}", row) for i, row in enumerate(data)], max_values=64)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = {
            "mean": np.nanmean(data, axis=1), "std": np.nanstd(data, axis=1),
            "min": np.nanmin(data, axis=1), "max": np.nanmax(data, axis=1),
            "l2": np.sqrt(np.nansum(data**2, axis=1)),
        }
    for stat, values in expected.items():
        np.testing.assert_allclose(cols[stat].to_numpy(zero_copy_only=False), values, err_msg=stat)
    assert cols["nan_count"].to_pylist() == [0, 2, 0, 12, 0]
    assert cols["value"].null_count == 5
    np.testing.assert_array_equal(cols["values"][1].as_py(), data[1])


def test_large_tensors_keep_summaries_and_a_hash_only() -> None:
    small, large = RNG.normal(size=(2, 3)), RNG.normal(size=(4, 5))
    words = np.array(["a", "b", "c"], dtype=object)
    cols = describe([tensor("s", small), tensor("l", large), tensor("w", words),
                      tensor("w2", np.array(list("abcdefg"), dtype=object))], max_values=6)
    assert cols["values"].to_pylist()[:2] == [small.reshape(-1).tolist(), None]
    assert cols["strings"].to_pylist()[2:] == [["a", "b", "c"], None]
    assert cols["size"].to_pylist() == [6, 20, 3, 7]
    assert all(isinstance(h, str) and len(h) == 16 for h in cols["hash"].to_pylist())
    assert cols["mean"].to_pylist()[1] == pytest.approx(large.mean())


def test_hash_tells_contents_datatype_and_shape_apart() -> None:
    x = np.arange(6, dtype=np.float32)
    same = hash_of(tensor("x", x.copy()))
    assert hash_of(tensor("y", x)) == same
    assert hash_of(tensor("x", x + 1)) != same
    assert hash_of(tensor("x", x.reshape(2, 3))) != same
    assert hash_of(tensor("x", x.astype(np.float64))) != same
    assert hash_of(tensor("b", np.array(["ab", "c"], dtype=object))) != hash_of(
        tensor("b", np.array(["a", "bc"], dtype=object)))


def test_empty_tensor() -> None:
    cols = describe([tensor("e", np.zeros((0, 3), np.float32))])
    assert cols["size"].to_pylist() == [0]
    assert np.isnan(cols["mean"].to_pylist()[0]) and cols["nan_count"].to_pylist() == [0]


def test_vectors_read_back_from_the_store(tmp_path: Path) -> None:
    pipeline = {"metadata": {"name": "vec"},
                "spec": {"steps": [{"name": "scale"}], "output": {"steps": ["scale"]}}}

    def scale(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        return {"y": (x * 2).astype(np.float32), "big": np.tile(x, 40),
                "tags": np.array(["p", "q"], dtype=object)}

    xs = [RNG.normal(size=(2, 3)).astype(np.float32) for _ in range(4)]

    async def main() -> None:
        with Collector([StoreRecorder(tmp_path, max_values=16)]) as observer:
            async with Engine(load_pipelines(pipeline), {"scale": scale},
                              observers=[observer]) as engine:
                for i, x in enumerate(xs):
                    assert (await engine.infer("vec", [Tensor.from_array("x", x)],
                                               request_id=f"r{i}")).ok

    asyncio.run(main())
    store = TraceStore(tmp_path)
    frame = store.frame("vec")
    for i, x in enumerate(xs):
        row = frame.loc[f"r{i}"]
        assert row["scale.outputs.y.mean"] == pytest.approx(float((x * 2).mean()), rel=1e-6)
        assert row["scale.outputs.big.max"] == pytest.approx(float(x.max()))
        assert row["vec.inputs.x.l2"] == pytest.approx(float(np.linalg.norm(x)), rel=1e-6)
        assert row["scale.outputs.tags.hash"] == tensor_hash("BYTES",
                                                             np.array(["p", "q"], dtype=object))
        outputs = store.records(f"r{i}").set_index("node").loc["scale", "outputs"]
        assert outputs["y"]["data"].dtype == np.float32
        np.testing.assert_array_equal(outputs["y"]["data"], x * 2)
        assert outputs["big"]["data"] is None and outputs["big"]["shape"] == [2, 120]
        assert outputs["tags"]["data"].tolist() == ["p", "q"]
    assert [c for c in frame.columns if c.startswith("scale.outputs.y")] == [
        f"scale.outputs.y.{s}" for s in ("mean", "std", "min", "max", "l2", "nan_count")]
