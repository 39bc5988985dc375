"""The embedded engine under concurrency and across its life cycle: loops and chained
pipelines, reused request ids, stop/start, event loops, waiters, cancellation, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from engine.embedded import EmbeddedBus
from engine.engine import Engine, EngineStateError
from engine.record import Record
from engine.spec import load_pipelines
from engine.steps import STEP_THREADS


def fp(name: str, data: list[float]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [len(data)], "data": data}


def pipe(name: str, steps: list[dict[str, Any]], output: list[str] | None = None,
         **spec: Any) -> list:
    body: dict[str, Any] = {"steps": steps, **spec}
    if output is not None:
        body["output"] = {"steps": output}
    return load_pipelines({"metadata": {"name": name}, "spec": body})


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def error_tap(bus: EmbeddedBus) -> list[Record]:
    errors: list[Record] = []
    bus.tap(lambda topic, r: errors.append(r) if topic.endswith("errors.errors") else None)
    return errors


# A self-loop: the router sends x round again until it is 2, then emits it as 'done'.
def loop_pipes(window_ms: int = 60000) -> list:
    return pipe("loop", [{"name": "r", "inputs": ["loop.inputs.x", "r.outputs.again"],
                          "tensorMap": {"r.outputs.again": "x"}, "inputsJoinType": "any",
                          "joinWindowMs": window_ms}],
                ["r.outputs.done"], allowCycles=True, maxStepRevisits=5)


def router(i: dict[str, Any]) -> dict[str, Any]:
    return {"done": i["x"]} if i["x"][0] >= 2 else {"again": i["x"] + 1}


# -- finding 1: a pipeline chained after a loop -------------------------------------------------
def test_a_pipeline_chained_after_a_loop_gets_the_loops_output() -> None:
    pipes = loop_pipes() + pipe("after", [{"name": "post"}], ["post"],
                                input={"externalInputs": ["loop.outputs"]})
    steps = {"r": router, "post": lambda x: {"y": x["done"] * 10}}

    async def main() -> None:
        async with Engine(pipes, steps) as eng:
            res = await eng.infer("loop", {"inputs": [fp("x", [0.0])]}, result_of="after",
                                  timeout=5)
            assert res.error is None
            assert res.outputs[0].data.tolist() == [20.0]

    run(main())


# -- finding 2: request ids reused while in flight ----------------------------------------------
async def slow(x: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.1)
    return {"y": x["x"] * 10}


def test_a_request_id_in_flight_is_refused_not_answered_with_another_result() -> None:
    async def main() -> None:
        async with Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": slow}) as eng:
            r1, r2 = await asyncio.gather(
                eng.infer("p", {"id": "same", "inputs": [fp("x", [3.0])]}, timeout=5),
                eng.infer("p", {"id": "same", "inputs": [fp("x", [4.0])]}, timeout=5))
            assert r1.ok and r1.outputs[0].data.tolist() == [30.0]
            assert not r2.ok and "in flight" in (r2.error or "")
            # once answered, the id may be used again
            r3 = await eng.infer("p", {"id": "same", "inputs": [fp("x", [5.0])]}, timeout=5)
            assert r3.outputs[0].data.tolist() == [50.0]

    run(main())


def test_a_retry_with_the_same_id_gets_its_own_answer() -> None:
    async def main() -> None:
        async with Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": slow}) as eng:
            with pytest.raises(TimeoutError):
                await eng.infer("p", {"id": "order-1", "inputs": [fp("x", [1.0])]},
                                timeout=0.02)
            res = await eng.infer("p", {"id": "order-1", "inputs": [fp("x", [2.0])]},
                                  timeout=5)
            assert res.outputs[0].data.tolist() == [20.0]

    run(main())


# -- finding 3: a stopped engine does not start again -------------------------------------------
def test_a_stopped_engine_refuses_to_start_or_infer() -> None:
    calls = {"n": 0}

    def step(x: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        return {"y": x["x"]}

    async def main() -> None:
        eng = Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": step})
        await eng.start()
        assert (await eng.infer("p", {"inputs": [fp("x", [1.0])]})).ok
        await eng.stop()
        await eng.stop()  # twice is fine
        with pytest.raises(EngineStateError, match="stopped"):
            await eng.start()
        with pytest.raises(EngineStateError, match="stopped"):
            await eng.infer("p", {"inputs": [fp("x", [1.0])]})
        with pytest.raises(EngineStateError, match="stopped"):
            eng.submit(eng.make_request("p", {"inputs": [fp("x", [1.0])]}))
        assert len(eng.processors) == 2 and calls["n"] == 1

    run(main())


# -- finding 4/11: one engine, one event loop ----------------------------------------------------
def test_an_engine_refuses_a_second_event_loop() -> None:
    eng = Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": lambda x: {"y": x["x"]}})

    async def ask() -> Any:
        return await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=5)

    assert asyncio.run(ask()).ok
    with pytest.raises(EngineStateError, match="another event loop"):
        asyncio.run(ask())


def test_an_engine_refuses_another_thread() -> None:
    eng = Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": lambda x: {"y": x["x"]}})
    raised: list[BaseException] = []

    async def ask() -> Any:
        return await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=5)

    async def main() -> None:
        assert (await ask()).ok

        def other() -> None:
            try:
                asyncio.run(ask())
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                raised.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        await asyncio.to_thread(thread.join)
        assert (await ask()).ok
        await eng.stop()

    run(main())
    assert len(raised) == 1 and isinstance(raised[0], EngineStateError)


# -- finding 5: waiters of clients that gave up ------------------------------------------------
def test_waiters_leave_when_the_client_times_out_or_cancels() -> None:
    async def never(x: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    async def main() -> None:
        async with Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": never}) as eng:
            for _ in range(20):
                with pytest.raises(TimeoutError):
                    await eng.infer("p", {"inputs": [fp("x", [1.0])]}, timeout=0.001)
            tasks = [asyncio.create_task(eng.infer("p", {"inputs": [fp("x", [1.0])]}))
                     for _ in range(20)]
            await asyncio.sleep(0.01)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert eng._waiters == {}

    run(main())


# -- finding 6: a self-loop leaves no late error records -----------------------------------------
def test_a_self_loop_leaves_no_join_timeout_errors() -> None:
    async def main() -> None:
        bus = EmbeddedBus()
        errors = error_tap(bus)
        async with Engine(loop_pipes(window_ms=50), {"r": router}, transport=bus) as eng:
            res = await asyncio.gather(*(eng.infer("loop", {"inputs": [fp("x", [0.0])]},
                                                   timeout=5) for _ in range(20)))
            assert all(r.ok and r.outputs[0].data.tolist() == [2.0] for r in res)
            await asyncio.sleep(0.2)  # past the join window
            assert [e.error for e in errors] == []

    run(main())


def test_absence_notices_in_a_loop_keep_their_generation() -> None:
    """A step in a loop that fails at generation 2 says so for generation 3, not 0."""
    def r(i: dict[str, Any]) -> dict[str, Any]:
        if i["x"][0] >= 2:
            raise ValueError("boom")
        return {"again": i["x"] + 1}

    async def main() -> None:
        bus = EmbeddedBus()
        notices: list[Record] = []
        bus.tap(lambda topic, rec: notices.append(rec) if topic.endswith(".control") else None)
        async with Engine(loop_pipes(), {"r": r}, transport=bus) as eng:
            res = await eng.infer("loop", {"inputs": [fp("x", [0.0])]}, timeout=5)
            assert res.error is not None and "boom" in res.error
            failed = [n for n in notices if n.lineage.origin == "r.outputs"]
            assert failed and failed[0].lineage.visits == {"r": 3}

    run(main())


# -- finding 7: a hung threaded step does not starve the others ---------------------------------
def test_a_hung_threaded_step_does_not_starve_another() -> None:
    release = threading.Event()

    def stuck(x: dict[str, Any]) -> dict[str, Any]:
        release.wait(5)
        return {"y": x["x"]}

    def fast(x: dict[str, Any]) -> dict[str, Any]:
        return {"y": x["x"] + 1}

    stuck.timeout_s = 0.02  # type: ignore[attr-defined]
    fast.timeout_s = 0.3  # type: ignore[attr-defined]
    pipes = pipe("slow", [{"name": "stuck"}], ["stuck"]) + pipe("quick", [{"name": "fast"}],
                                                              ["fast"])

    async def main() -> None:
        async with Engine(pipes, {"stuck": stuck, "fast": fast}) as eng:
            res = await asyncio.gather(*(eng.infer("slow", {"inputs": [fp("x", [1.0])]})
                                         for _ in range(max(STEP_THREADS, 32))))
            # the first calls overrun their timeout; the others find no thread free
            assert all("timed out" in (r.error or "") or "StepBusy" in (r.error or "")
                       for r in res)
            quick = await eng.infer("quick", {"inputs": [fp("x", [1.0])]}, timeout=5)
            release.set()
            assert quick.ok, quick.error

    try:
        run(main())
    finally:
        release.set()


def test_waiting_for_a_thread_does_not_count_against_timeout_s(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.steps

    monkeypatch.setattr(engine.steps, "STEP_THREADS", 1)

    def step(x: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.1)
        return {"y": x["x"]}

    step.timeout_s = 0.15  # type: ignore[attr-defined]

    async def main() -> None:
        # one thread, whichever pool the step uses: the second call waits for the first
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        async with Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": step}) as eng:
            res = await asyncio.gather(*(eng.infer("p", {"inputs": [fp("x", [1.0])]})
                                         for _ in range(2)))
            assert [r.error for r in res] == [None, None]

    run(main())


# -- finding 8: stop() with requests in flight ------------------------------------------------
def test_stop_answers_waiting_clients_and_drops_open_batches() -> None:
    ran: list[float] = []

    async def slow_step(x: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {"y": x["x"]}

    def batched(x: dict[str, Any]) -> dict[str, Any]:
        ran.append(time.monotonic())
        return {"y": x["x"]}

    pipes = pipe("a", [{"name": "slow"}], ["slow"]) + pipe(
        "b", [{"name": "bs", "batch": {"size": 4, "windowMs": 100}}], ["bs"])

    async def main() -> None:
        eng = Engine(pipes, {"slow": slow_step, "bs": batched})
        await eng.start()
        clients = [asyncio.create_task(eng.infer(p, {"inputs": [fp("x", [1.0])]}, timeout=5))
                   for p in ("a", "b")]
        await asyncio.sleep(0.02)
        await eng.stop()
        for client in clients:
            res = await client
            assert res.error == "engine stopped before the answer"
        await asyncio.sleep(0.15)  # past the batch window
        assert ran == []
        assert not any(p.batcher.pending for p in eng.processors if p.batcher)

    run(main())


# -- finding 9: CancelledError raised inside a step ------------------------------------------
def test_cancelled_error_inside_a_step_is_a_step_error() -> None:
    async def step(x: dict[str, Any]) -> dict[str, Any]:
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.cancel)  # someone else cancels it
        await fut
        return {"y": x["x"]}

    pipes = pipe("p", [{"name": "s"}], ["s"]) + pipe(
        "b", [{"name": "s", "batch": {"size": 1}}], ["s"])

    async def main() -> None:
        async with Engine(pipes, {"s": step}) as eng:
            for name in ("p", "b"):
                res = await eng.infer(name, {"inputs": [fp("x", [1.0])]}, timeout=2)
                assert res.error is not None and "CancelledError" in res.error

    run(main())


# -- finding 10: concurrent first infer() calls -----------------------------------------------
def test_concurrent_first_calls_start_the_engine_once() -> None:
    class SlowStartBus(EmbeddedBus):
        async def start(self) -> None:
            await asyncio.sleep(0)

    calls = {"n": 0}

    def step(x: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        return {"y": x["x"]}

    async def main() -> None:
        eng = Engine(pipe("p", [{"name": "s"}], ["s"]), {"s": step}, transport=SlowStartBus())
        res = await asyncio.gather(*(eng.infer("p", {"inputs": [fp("x", [1.0])]})
                                     for _ in range(3)))
        assert all(r.ok for r in res)
        assert len(eng.processors) == 2 and calls["n"] == 3
        await eng.stop()

    run(main())


# -- finding 12: every waiter gets its own answer object --------------------------------------
def test_each_waiter_gets_its_own_error_answer() -> None:
    pipes = pipe("p1", [{"name": "s"}], ["s"]) + pipe(
        "p2", [{"name": "t"}], ["t"], input={"externalInputs": ["p1.outputs"]})

    async def main() -> None:
        async with Engine(pipes, {"s": lambda x: 1 / 0, "t": lambda x: x}) as eng:
            rec = eng.make_request("p1", {"inputs": [fp("x", [1.0])]})
            f1 = eng.expect(rec.lineage.request_id, "p1")
            f2 = eng.expect(rec.lineage.request_id, "p2")
            eng.submit(rec)
            r1, r2 = await f1, await f2
            assert (r1.pipeline, r2.pipeline) == ("p1", "p2")
            assert r1.error == r2.error and "ZeroDivisionError" in (r1.error or "")

    run(main())
