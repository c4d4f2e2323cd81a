"""The behaviour every broker must have. A broker is done when it passes all of these unchanged."""

from __future__ import annotations

import threading
import time

from chute.brokers.base import Delivery, Outgoing, Queue
from chute.brokers.store import Store, WorkerInfo
from chute.results import ErrorInfo, ResultRecord
from chute.states import State


def out(queue: str, i: int | str, **kw: object) -> Outgoing:
    return Outgoing(queue, f"m{i}-{queue}", f"body-{i}".encode(), **kw)  # type: ignore[arg-type]


def fetch_all(broker: Queue, queue: str, limit: int = 100, lease: float = 30.0) -> list[Delivery]:
    return broker.fetch([queue], limit, lease, 0.0)


def wait_fetch(broker: Queue, queue: str, timeout: float, lease: float = 30.0) -> list[Delivery]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = broker.fetch([queue], 100, lease, 0.05)
        if got:
            return got
    return []


def test_publish_fetch_ack_round_trip(broker: Queue, queue_name: str) -> None:
    ids = broker.publish([out(queue_name, 1), out(queue_name, 2)])
    assert ids == [f"m1-{queue_name}", f"m2-{queue_name}"]
    got = fetch_all(broker, queue_name)
    assert [d.body for d in got] == [b"body-1", b"body-2"]
    assert all(d.deliveries == 1 and d.queue == queue_name for d in got)
    assert fetch_all(broker, queue_name) == []  # held under lease
    (s,) = broker.stats([queue_name])
    assert (s.ready, s.in_flight, s.delayed, s.dead) == (0, 2, 0, 0)
    assert broker.ack(got) == 2
    (s,) = broker.stats([queue_name])
    assert (s.ready, s.in_flight) == (0, 0)
    assert broker.ack(got) == 0  # acking twice does nothing


def test_a_big_batch_over_several_priorities_is_acked_once_each(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, i, priority=i % 3) for i in range(2_500)])
    got: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(got) < 2_500 and time.monotonic() < deadline:  # a broker may hand over fewer than asked
        got += broker.fetch([queue_name], 2_500 - len(got), 30.0, 0.05)
    assert len(got) == 2_500 and len({d.id for d in got}) == 2_500
    assert fetch_all(broker, queue_name) == []  # every one of them is held
    # one call: 2,499 held, one repeated, and one whose claim is stale (it was released and fetched again)
    assert broker.release([got[0]]) == 1
    (again,) = fetch_all(broker, queue_name)
    assert again.id == got[0].id
    assert broker.ack([*got, got[1]]) == 2_499
    (s,) = broker.stats([queue_name])
    assert (s.ready, s.in_flight) == (0, 1)
    assert broker.ack(got) == 0
    assert broker.ack([again]) == 1
    (s,) = broker.stats([queue_name])
    assert (s.ready, s.in_flight, s.delayed, s.dead) == (0, 0, 0, 0)
    assert fetch_all(broker, queue_name) == []


def test_fetch_respects_limit_and_fifo(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, i) for i in range(10)])
    first = broker.fetch([queue_name], 3, 30.0, 0.0)
    rest = broker.fetch([queue_name], 100, 30.0, 0.0)
    assert [d.body for d in first] == [f"body-{i}".encode() for i in range(3)]
    assert [d.body for d in rest] == [f"body-{i}".encode() for i in range(3, 10)]


def test_higher_priority_first_then_fifo(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, "low1", priority=0), out(queue_name, "high1", priority=9),
                    out(queue_name, "mid", priority=5), out(queue_name, "high2", priority=9),
                    out(queue_name, "low2", priority=0)])
    got = fetch_all(broker, queue_name)
    assert [d.body for d in got] == [b"body-high1", b"body-high2", b"body-mid", b"body-low1", b"body-low2"]


def test_queues_are_separate_and_fetch_takes_several(broker: Queue, queue_name: str) -> None:
    other = queue_name + "x"
    broker.publish([out(queue_name, 1), out(other, 2)])
    assert [d.body for d in fetch_all(broker, other)] == [b"body-2"]
    both = broker.fetch([queue_name, other], 10, 30.0, 0.0)
    assert [d.body for d in both] == [b"body-1"]


def test_eta_is_not_delivered_before_due(broker: Queue, queue_name: str) -> None:
    due = time.time() + 0.6
    broker.publish([out(queue_name, "later", eta=due), out(queue_name, "now")])
    got = fetch_all(broker, queue_name)
    assert [d.body for d in got] == [b"body-now"]
    (s,) = broker.stats([queue_name])
    assert s.delayed == 1 and s.in_flight == 1
    later = wait_fetch(broker, queue_name, 3.0)
    assert [d.body for d in later] == [b"body-later"]
    assert time.time() >= due  # never before its ETA (measured from the ETA itself, whatever the fetches took)
    assert later[0].deliveries == 1


def test_blocking_fetch_wakes_on_publish(broker: Queue, queue_name: str) -> None:
    timer = threading.Timer(0.2, lambda: broker.publish([out(queue_name, 1)]))
    timer.start()
    t0 = time.monotonic()
    got = broker.fetch([queue_name], 10, 30.0, 3.0)
    elapsed = time.monotonic() - t0
    timer.join()
    assert [d.body for d in got] == [b"body-1"]
    assert 0.15 <= elapsed < 1.5


def test_blocking_fetch_returns_empty_after_timeout(broker: Queue, queue_name: str) -> None:
    t0 = time.monotonic()
    assert broker.fetch([queue_name], 10, 30.0, 0.3) == []
    assert 0.25 <= time.monotonic() - t0 < 2.0


def test_expired_lease_is_redelivered_and_old_claim_is_fenced(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, 1)])
    (first,) = broker.fetch([queue_name], 10, 0.3, 0.0)
    again = wait_fetch(broker, queue_name, 3.0)
    assert [d.body for d in again] == [b"body-1"]
    assert again[0].deliveries == 2
    assert again[0].claim != first.claim
    assert broker.ack([first]) == 0  # the stale claim cannot ack
    assert broker.extend([first], 30.0) == [False]
    assert broker.ack(again) == 1


def test_extend_keeps_the_lease(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, 1)])
    (d,) = broker.fetch([queue_name], 10, 0.5, 0.0)
    for _ in range(4):
        time.sleep(0.25)
        assert broker.extend([d], 0.5) == [True]
    assert fetch_all(broker, queue_name) == []
    assert broker.ack([d]) == 1


def test_nack_requeues_with_new_body_after_delay(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, 1)])
    (d,) = fetch_all(broker, queue_name)
    assert broker.nack(d, b"attempt-2", time.time() + 0.4)
    assert fetch_all(broker, queue_name) == []
    (s,) = broker.stats([queue_name])
    assert s.delayed == 1
    again = wait_fetch(broker, queue_name, 3.0)
    assert [x.body for x in again] == [b"attempt-2"]
    assert again[0].deliveries == 1  # a retry is a new attempt, not a lost delivery
    assert not broker.nack(d, b"x", time.time())  # fenced


def test_release_gives_back_at_once_without_counting(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, 1), out(queue_name, 2)])
    got = fetch_all(broker, queue_name)
    assert broker.release(got) == 2
    again = fetch_all(broker, queue_name)
    assert [d.body for d in again] == [b"body-1", b"body-2"]
    assert [d.deliveries for d in again] == [1, 1]


def test_dead_letter_list_replay_purge(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, i) for i in range(3)])
    got = fetch_all(broker, queue_name)
    assert broker.dead_letter(got[0], "ValueError: bad")
    assert broker.dead_letter(got[1], "decode_error: junk", b"\xff\x00raw")
    assert broker.ack([got[2]]) == 1
    dead = broker.dead_letters(queue_name)
    assert [(x.id, x.reason, x.body) for x in dead] == [
        (got[0].id, "ValueError: bad", b"body-0"), (got[1].id, "decode_error: junk", b"\xff\x00raw")]
    assert all(x.queue == queue_name and x.dead_at > 0 for x in dead)
    (s,) = broker.stats([queue_name])
    assert (s.ready, s.in_flight, s.dead) == (0, 0, 2)
    assert not broker.dead_letter(got[0], "again")  # no longer held
    assert broker.replay(queue_name, [got[0].id]) == 1
    back = fetch_all(broker, queue_name)
    assert [d.body for d in back] == [b"body-0"] and back[0].deliveries == 1
    assert broker.purge_dead(queue_name) == 1
    assert broker.dead_letters(queue_name) == []
    assert broker.replay(queue_name) == 0


def test_dead_letters_paginate_and_filter_by_queue(broker: Queue, queue_name: str) -> None:
    other = queue_name + "o"
    broker.publish([out(queue_name, i) for i in range(5)] + [out(other, 9)])
    for d in fetch_all(broker, queue_name) + fetch_all(broker, other):
        broker.dead_letter(d, "r")
    page = broker.dead_letters(queue_name, limit=2, offset=1)
    assert [x.body for x in page] == [b"body-1", b"body-2"]
    assert [x.body for x in broker.dead_letters(other)] == [b"body-9"]
    assert broker.replay(queue_name) == 5
    assert len(fetch_all(broker, queue_name)) == 5


def test_idempotency_key_dedups_within_window(broker: Queue, queue_name: str) -> None:
    a = Outgoing(queue_name, "first", b"1", idempotency_key="k1", idempotency_window=60)
    b = Outgoing(queue_name, "second", b"2", idempotency_key="k1", idempotency_window=60)
    c = Outgoing(queue_name, "third", b"3", idempotency_key="k2", idempotency_window=60)
    assert broker.publish([a]) == ["first"]
    assert broker.publish([b, c]) == ["first", "third"]
    assert sorted(d.body for d in fetch_all(broker, queue_name)) == [b"1", b"3"]


def test_idempotency_window_expires(broker: Queue, queue_name: str) -> None:
    a = Outgoing(queue_name, "first", b"1", idempotency_key="kx", idempotency_window=0.3)
    b = Outgoing(queue_name, "second", b"2", idempotency_key="kx", idempotency_window=0.3)
    assert broker.publish([a]) == ["first"]
    time.sleep(0.5)
    assert broker.publish([b]) == ["second"]


def test_any_bytes_are_carried_unchanged(broker: Queue, queue_name: str) -> None:
    bodies = [b"", b"\x00\xff\xfe", "é✓".encode(), b"{" * 1000, bytes(range(256))]
    broker.publish([Outgoing(queue_name, f"b{i}", body) for i, body in enumerate(bodies)])
    assert [d.body for d in fetch_all(broker, queue_name)] == bodies


def test_stats_lists_known_queues(broker: Queue, queue_name: str) -> None:
    broker.publish([out(queue_name, 1), out(queue_name + "2", 1, eta=time.time() + 60)])
    table = {s.queue: s for s in broker.stats()}
    assert table[queue_name].ready == 1
    assert table[queue_name + "2"].delayed == 1
    assert broker.stats(["never-used" + queue_name])[0].ready == 0


def test_worker_registry(store: Store) -> None:
    info = WorkerInfo("w1", "host", 123, ["default"], 4, time.time(), time.time())
    store.heartbeat(info, ttl=0.5)
    assert [w.id for w in store.workers()] == ["w1"]
    time.sleep(0.7)
    assert store.workers() == []
    store.heartbeat(info, ttl=10)
    store.worker_gone("w1")
    assert store.workers() == []


# -- the Store side: the broker itself, or the store its App pairs it with ----------------------

def test_results_store_get_and_wait(store: Store) -> None:
    results = store
    now = time.time()
    assert results.get("nope") is None
    rec = ResultRecord("t1", State.SUCCEEDED, "mod.f", "default", b"42", "json", None, 0, now, now + 60)
    storer = threading.Timer(0.2, lambda: results.store([rec]))
    storer.start()
    t0 = time.monotonic()
    got = results.wait("t1", 3.0)
    storer.join()  # the waiter wakes as the record lands, maybe before the store's call returns its connection
    assert got is not None and got.state is State.SUCCEEDED and got.value == b"42"
    assert time.monotonic() - t0 < 1.5
    err = ResultRecord("t2", State.DEAD, "mod.g", error=ErrorInfo("ValueError", "bad", "tb"), updated_at=now)
    results.store([err])
    got2 = results.get("t2")
    assert got2 is not None and got2.error == ErrorInfo("ValueError", "bad", "tb")


def test_a_started_record_never_lands_over_a_cancellation_or_an_outcome(store: Store) -> None:
    """How a store that cannot see the messages (RabbitMQ's) is told of starts: the write itself keeps a
    cancellation or an outcome that came first, so a cancel between a fetch and its STARTED mark stands."""
    results = store
    now = time.time()

    def record(task_id: str, state: State) -> ResultRecord:
        return ResultRecord(task_id, state, "mod.f", "default", b"1" if state is State.SUCCEEDED else None,
                            "json", None, 0, now, now + 60)

    assert results.cancel("cancelled", 60) is State.CANCELLED
    results.store([record("done", State.SUCCEEDED), record("retrying", State.RETRYING)])
    results.store([record(i, State.STARTED) for i in ("cancelled", "done", "retrying", "new")])
    states = {i: rec.state for i in ("cancelled", "done", "retrying", "new") if (rec := results.get(i)) is not None}
    assert states == {"cancelled": State.CANCELLED, "done": State.SUCCEEDED, "retrying": State.STARTED,
                      "new": State.STARTED}
    results.store([record("new", State.SUCCEEDED)])  # an outcome lands over a start as ever
    got = results.get("new")
    assert got is not None and got.state is State.SUCCEEDED


def test_waiters_among_a_large_batch_of_stored_results_each_get_their_own(store: Store) -> None:
    """One store of 1,200 records, two of which are awaited: each waiter wakes with its own record."""
    results = store
    now = time.time()
    records = [ResultRecord(f"b{i}", State.SUCCEEDED, "mod.f", "default", str(i).encode(), "json", None, 0, now,
                            now + 60) for i in range(1200)]
    got: dict[str, ResultRecord | None] = {}
    woke: dict[str, float] = {}

    def wait(task_id: str) -> None:
        got[task_id] = results.wait(task_id, 5.0)
        woke[task_id] = time.monotonic()

    waiters = [threading.Thread(target=wait, args=(i,)) for i in ("b7", "b1100")]
    for w in waiters:
        w.start()
    time.sleep(0.3)  # both are waiting
    t0 = time.monotonic()
    results.store(records)
    for w in waiters:
        w.join(5)
    assert all(woke[i] - t0 < 0.5 for i in ("b7", "b1100")), woke  # woken by the store, not a re-check
    assert got["b7"] is not None and got["b7"].value == b"7"
    assert got["b1100"] is not None and got["b1100"].value == b"1100"
    last = results.get("b1199")
    assert last is not None and last.value == b"1199"


def test_queued_marks_never_overwrite_a_record_and_can_be_forgotten(store: Store) -> None:
    results = store
    now = time.time()
    done = ResultRecord("q-done", State.SUCCEEDED, "mod.f", "default", b"1", updated_at=now, expires_at=now + 60)
    results.store([done])
    results.queued([ResultRecord(i, State.QUEUED, queue="default", updated_at=now, expires_at=now + 60)
                    for i in ("q-new", "q-done", "q-other")])
    new, kept = results.get("q-new"), results.get("q-done")
    assert new is not None and new.state is State.QUEUED and new.queue == "default"
    assert kept is not None and kept.state is State.SUCCEEDED and kept.value == b"1"  # never over a record
    results.store([ResultRecord("q-other", State.STARTED, "mod.f", "default", updated_at=now, expires_at=now + 60)])
    results.forget_queued(["q-new", "q-done", "q-other"])  # only marks go
    assert results.get("q-new") is None
    assert results.get("q-done") is not None and results.get("q-other") is not None
    assert results.get("q-other").state is State.STARTED  # type: ignore[union-attr]


def test_results_wait_times_out(store: Store) -> None:
    results = store
    t0 = time.monotonic()
    assert results.wait("never", 0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 2.0


def test_results_expire(store: Store) -> None:
    results = store
    now = time.time()
    results.store([ResultRecord("old", State.SUCCEEDED, updated_at=now, expires_at=now + 0.2)])
    assert results.get("old") is not None
    time.sleep(0.4)
    assert results.get("old") is None
    results.purge_expired()
    assert results.get("old") is None
