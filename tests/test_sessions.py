"""Sessions: the broker pins them to one worker, streams PARTIALs, and fails them clearly.

Every test runs on the sync Client and on the AsyncClient (:mod:`tests.callers`).
"""

from __future__ import annotations

import os
import signal

import pytest

from client import (
    BrokerUnreachable,
    ClientClosed,
    MalformedRequest,
    QueueFull,
    RequestTimeout,
    ServiceUnavailable,
    SessionLost,
    UnknownSession,
)
from client.wire.lanes import LaneMode
from tests.callers import CLIENT_KINDS, Caller
from tests.conftest import Stack, broker_stats, needs_lanes, wait_for_workers, wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("client_kind", CLIENT_KINDS)]


def test_requests_of_a_session_stay_on_one_worker_and_sessions_spread(
    stack: Stack, client_kind: str
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 2)
    with Caller(b.endpoint, client_kind, timeout=5) as c:
        first = c.open_session("svc")
        second = c.open_session("svc")
        assert first.id != second.id and first.worker != second.worker
        replies = [first.request({"op": "count"}).body for _ in range(20)]
        assert len({r["pid"] for r in replies}) == 1
        assert [r["count"] for r in replies] == list(range(1, 21))  # state kept on the worker
        other = second.request({"op": "count"}).body
        assert other["pid"] != replies[0]["pid"] and other["count"] == 1
        # Requests outside sessions still go to both workers.
        pids = {int(c.request("svc", {"op": "echo"}).body["pid"]) for _ in range(6)}
        assert len(pids) == 2
        first.close()
        second.close()
        assert broker_stats(b.endpoint)["sessions"] == 0


@pytest.mark.parametrize("lane", ["off", pytest.param("require", marks=needs_lanes)])
def test_a_deferred_reply_streams_partials_while_the_worker_serves_other_requests(
    stack: Stack, client_kind: str, lane: LaneMode
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc", "--credit", "2")
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=10) as c, c.open_session("svc", lane=lane) as s:
        assert s.session.lane == ("shm" if lane == "require" else "zmq")
        stream = s.submit({"op": "ticks", "n": 40, "every_us": 2000})
        wait_until(lambda: c.receive(0.05) or len(stream.partials) >= 3, 10, "3 ticks")
        # The stream holds one credit slot; the other serves the session meanwhile.
        assert s.request({"op": "count"}).body["count"] == 1
        final = stream.result()
        assert final.body["ticks"] == 40
        assert [p.body["tick"] for p in stream.partials] == list(range(40))


@pytest.mark.parametrize("lane", ["off", pytest.param("require", marks=needs_lanes)])
def test_a_session_request_waits_for_its_workers_credit_then_runs(
    stack: Stack, client_kind: str, lane: LaneMode
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc", "--credit", "1")
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=10) as c, c.open_session("svc", lane=lane) as s:
        stream = s.submit({"op": "ticks", "n": 5, "every_us": 5000})
        queued = s.submit({"op": "count"})
        assert stream.result().body["ticks"] == 5
        assert queued.result().body["count"] == 1
        assert len(stream.partials) == 5


def test_a_session_whose_worker_is_killed_fails_mid_stream_within_bounded_time(
    stack: Stack, client_kind: str
) -> None:
    b = stack.broker("ipc")
    # heartbeat 50 ms x liveness 3: the broker notices a dead worker within ~150 ms.
    w1 = stack.worker(b.endpoint, "svc", "--credit", "2")
    w2 = stack.worker(b.endpoint, "svc", "--credit", "2")
    wait_for_workers(b.endpoint, "svc", 2)
    with Caller(b.endpoint, client_kind, timeout=10) as c:
        s = c.open_session("svc")
        pid = s.request({"op": "count"}).body["pid"]
        victim, survivor = (w1, w2) if pid == w1.pid else (w2, w1)
        stream = s.submit({"op": "ticks", "n": 0, "every_us": 1000})  # until the worker dies
        wait_until(lambda: c.receive(0.05) or len(stream.partials) >= 5, 10, "5 ticks")
        os.kill(victim.pid, signal.SIGKILL)
        # Detected by heartbeats (session_lost), not by our own 10 s timeout.
        with pytest.raises(SessionLost, match=r"session \d+: worker .* missed its heartbeats"):
            stream.result()
        with pytest.raises(SessionLost, match="open a new session"):
            s.request({"op": "count"})
        stats = broker_stats(b.endpoint)
        assert stats["sessions_lost"] == 1 and stats["redispatched"] == 0
        # The broker keeps serving everyone else, and new sessions pin to the survivor.
        again = c.open_session("svc")
        assert again.request({"op": "count"}).body["pid"] == survivor.pid
        s.close()
        again.close()


def test_session_errors_are_clear(stack: Stack, client_kind: str) -> None:
    b = stack.broker("ipc", "--max-sessions", "2")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    with (
        Caller(b.endpoint, client_kind, timeout=5) as c,
        Caller(b.endpoint, client_kind, timeout=5) as other,
    ):
        with pytest.raises(ServiceUnavailable, match="no worker of service 'nothing'"):
            c.open_session("nothing")
        with pytest.raises(MalformedRequest, match=r"body is \{'service': str\}"):
            c.request("nl.session.open", {"svc": 1})
        s = c.open_session("svc")
        with pytest.raises(MalformedRequest, match="needs the header's session field"):
            c.request("nl.session", {"op": "count"})
        # Another client cannot use (or even see) this client's session.
        with pytest.raises(UnknownSession, match=f"no session {s.id} for this client"):
            other.session(s.id, s.service, s.worker).request({"op": "count"})
        with pytest.raises(UnknownSession):
            c.session(10**6, s.service, s.worker).request({"op": "count"})
        c.open_session("svc")
        with pytest.raises(QueueFull, match="holds 2 sessions, its maximum"):
            c.open_session("svc")
        s.close()
        with pytest.raises(UnknownSession, match="never opened, closed"):
            c.session(s.id, s.service, s.worker).request({"op": "count"})
        assert c.request("svc", {"op": "echo"}).body["pid"] > 0  # still serving


def test_an_idle_session_is_forgotten(stack: Stack, client_kind: str) -> None:
    b = stack.broker("ipc", "--session-idle-ms", "200")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=5) as c:
        s = c.open_session("svc")
        assert s.request({"op": "count"}).body["count"] == 1
        wait_until(lambda: broker_stats(b.endpoint)["sessions_expired"] == 1, 10, "expiry")
        with pytest.raises(UnknownSession, match="idle for more than 200 ms"):
            s.request({"op": "count"})


def test_a_session_request_times_out_on_the_client_if_the_worker_never_answers(
    stack: Stack, client_kind: str
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=5) as c, c.open_session("svc") as s:
        with pytest.raises(RequestTimeout) as info:
            s.request({"op": "sleep", "s": 2}, timeout=0.3)
        # The broker did answer here: it is the session's worker that did not.
        assert not isinstance(info.value, BrokerUnreachable)
        assert "no reply from service 'nl.session'" in str(info.value)


def test_a_closed_session_refuses_requests_and_closing_again_is_harmless(
    stack: Stack, client_kind: str
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=5) as c:
        s = c.open_session("svc")
        assert s.request({"op": "count"}).body["count"] == 1
        s.close()
        assert s.closed and broker_stats(b.endpoint)["sessions"] == 0
        with pytest.raises(ClientClosed, match=f"session {s.id} on 'svc' is closed"):
            s.request({"op": "count"})
        s.close()  # idempotent: sends nothing
        assert "closed" in repr(s.session)
