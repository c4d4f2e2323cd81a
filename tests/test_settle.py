"""settle.decide alone: every way a message ends, as a pure function (no broker, no worker, no App)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest

import chute
from chute.brokers.base import Delivery
from chute.envelope import Codec, Envelope, WorkflowLink
from chute.errors import PayloadTooLarge, TaskCancelled, TimeLimitExceeded, WorkerLost
from chute.results import ErrorInfo
from chute.states import State
from chute.task import Task, TaskOptions
from chute.worker.job import Job, Outcome, Reject
from chute.worker.settle import Ack, Cancelled, DeadLetter, Dropped, Fail, Retry, decide, retry_delay

NOW = 1_000_000.0
TTL = 3600.0
CODEC = Codec("json")


def no_jitter(low: float, high: float) -> float:
    return 1.0


def make_job(attempt: int = 0, workflow: WorkflowLink | None = None, **options: Any) -> Job:
    task: Task[Any, Any] = Task(cast(Any, None), lambda: None, "tasks.t", TaskOptions(**options))
    env = Envelope(v=1, id="t1", name="tasks.t", created=NOW - 5, queue="q", attempt=attempt, workflow=workflow)
    return Job(Delivery("q", "t1", CODEC.encode(env), "claim", 1), env, task)


def settle(item: Outcome | Reject | Dropped, codec: Codec = CODEC) -> Any:
    return decide(item, codec, TTL, NOW, no_jitter)


def failed(job: Job, exc: BaseException) -> Outcome:
    return Outcome(job, None, exc, "Traceback: here", 0.25)


# -- success --------------------------------------------------------------------------------------
def test_a_success_is_acked_with_its_encoded_result() -> None:
    job = make_job()
    s = settle(Outcome(job, {"n": 1}, None, "", 0.5))
    assert isinstance(s, Ack) and s.delivery is job.delivery and s.job is job
    assert s.value == {"n": 1} and s.duration == 0.5 and s.error == ""
    rec = s.record
    assert rec.state is State.SUCCEEDED and CODEC.decode_value(rec.value, rec.codec) == {"n": 1}
    assert (rec.task_id, rec.name, rec.queue, rec.attempt) == ("t1", "tasks.t", "q", 0)
    assert rec.updated_at == NOW and rec.expires_at == NOW + TTL


def test_a_none_result_is_stored_without_a_value_and_no_ttl_means_no_expiry() -> None:
    s = decide(Outcome(make_job(), None, None, "", 0.1), CODEC, 0.0, NOW)
    assert isinstance(s, Ack) and s.record.value is None and s.record.expires_at is None


def test_store_result_false_acks_without_a_record_or_encoding_the_value() -> None:
    s = settle(Outcome(make_job(store_result=False), object(), None, "", 0.1))  # not encodable: never tried
    assert isinstance(s, Ack) and s.record is None


def test_a_workflow_steps_result_is_stored_even_with_store_result_false() -> None:
    # the steps after it read it
    job = make_job(workflow=WorkflowLink("w1", "s.0"), store_result=False)
    s = settle(Outcome(job, 7, None, "", 0.1))
    assert isinstance(s, Ack) and s.record.state is State.SUCCEEDED and CODEC.decode_value(s.record.value, "json") == 7


def test_a_result_that_cannot_be_encoded_fails_the_task_and_is_acked() -> None:
    s = settle(Outcome(make_job(), object(), None, "", 0.1))
    assert isinstance(s, Fail) and s.record.state is State.FAILED
    assert s.record.error.type == "chute.errors.SerializationError" and s.error.startswith("SerializationError: ")


# -- failures: retry, dead-letter, fail ------------------------------------------------------------
def test_a_failure_with_retries_left_is_retried_with_backoff_as_its_next_attempt() -> None:
    job = make_job(attempt=1, retries=3, retry_backoff=2.0)
    s = settle(failed(job, ValueError("boom")))
    assert isinstance(s, Retry) and s.delay == 4.0  # 2 s doubled once
    assert CODEC.decode(s.body).attempt == 2 and job.envelope.attempt == 1  # the job itself is untouched
    assert s.record.state is State.RETRYING and s.record.attempt == 1
    assert s.record.error == ErrorInfo("ValueError", "boom", "Traceback: here")
    assert s.error == "ValueError: boom" and s.duration == 0.25


def test_backoff_is_capped_and_jittered_by_the_drawn_factor() -> None:
    job = make_job(attempt=9, retries=20, retry_backoff=1.0, max_backoff=60.0, retry_jitter=0.5)
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return 1.5

    s = decide(failed(job, ValueError("x")), CODEC, TTL, NOW, uniform)
    assert isinstance(s, Retry) and s.delay == 90.0 and draws == [(0.5, 1.5)]


def test_chute_retry_countdown_sets_the_delay_exactly() -> None:
    assert settle(failed(make_job(), chute.Retry(countdown=0.3))).delay == 0.3
    assert settle(failed(make_job(), chute.Retry(countdown=-5))).delay == 0.0
    assert retry_delay(make_job(retries=0), chute.Retry(countdown=1)) is None  # no retries: no countdown


def test_a_time_limit_is_a_failure_like_any_other() -> None:
    assert isinstance(settle(failed(make_job(), TimeLimitExceeded("slow"))), Retry)


def test_out_of_retries_dead_letters_with_the_error_as_reason() -> None:
    job = make_job(attempt=3, retries=3)
    s = settle(failed(job, ValueError("boom")))
    assert isinstance(s, DeadLetter) and s.reason == "ValueError: boom"
    assert s.record.state is State.DEAD and s.record.error.traceback == "Traceback: here"


def test_out_of_retries_with_dead_letter_false_records_failed() -> None:
    s = settle(failed(make_job(retries=0, dead_letter=False), chute.Retry(countdown=1)))
    assert isinstance(s, Fail) and s.record.state is State.FAILED and s.record.error.type == "chute.errors.Retry"


def test_worker_lost_is_dead_lettered_whatever_retries_are_left() -> None:
    lost = WorkerLost("worker_lost: its worker died while running it 3 times")
    s = settle(Outcome(make_job(retries=5), None, lost, "", 0.0))
    assert isinstance(s, DeadLetter) and s.reason == str(lost)
    assert s.record.state is State.DEAD and s.record.error.type == "chute.errors.WorkerLost"


def test_a_task_cancelled_while_running_is_recorded_cancelled_and_acked() -> None:
    s = settle(failed(make_job(retries=5), TaskCancelled("interrupted")))
    assert isinstance(s, Cancelled) and s.record.state is State.CANCELLED
    assert s.record.error.message == "tasks.t was cancelled while running"
    assert s.error == "TaskCancelled: tasks.t was cancelled while running"


def test_a_cancelled_coroutine_counts_as_cancelled_only_if_the_task_was() -> None:
    job = make_job()
    assert isinstance(settle(failed(job, asyncio.CancelledError())), Retry)  # not cancelled by anyone
    job.cancelled = True
    assert isinstance(settle(failed(job, asyncio.CancelledError())), Cancelled)


def test_a_retry_too_large_to_send_raises_rather_than_settling() -> None:
    job = make_job(retries=3)
    job.envelope.args = ["x" * 5000]
    with pytest.raises(PayloadTooLarge):
        decide(failed(job, ValueError("x")), Codec("json", max_message_size=1024), TTL, NOW, no_jitter)


# -- messages that never ran -----------------------------------------------------------------------
def test_an_undecodable_message_is_dead_lettered_with_no_record() -> None:
    d = Delivery("q", "m1", b"\xff garbage", "claim", 1)
    s = settle(Reject(d, "decode_error: bad bytes"))
    assert isinstance(s, DeadLetter) and s.record is None and s.job is None
    assert s.reason == s.error == "decode_error: bad bytes"


@pytest.mark.parametrize("reason", ["unknown_task: no task named 'x' is registered in this worker",
                                    "bad signature: key 'k1' does not match"])
def test_an_unknown_task_or_bad_signature_is_dead_lettered_with_a_dead_record(reason: str) -> None:
    job = make_job()
    s = settle(Reject(job.delivery, reason, job.envelope))
    assert isinstance(s, DeadLetter) and s.reason == reason
    assert s.record.state is State.DEAD and s.record.error == ErrorInfo("chute.errors.ChuteError", reason, "")


def test_an_expired_message_is_acked_with_a_failed_record() -> None:
    job = make_job()
    err = ErrorInfo("chute.errors.TaskExpired", "expired at 1.000 before a worker ran it")
    s = settle(Reject(job.delivery, "expired", job.envelope, State.FAILED, err))
    assert isinstance(s, Fail) and s.record.state is State.FAILED and s.record.error == err


def test_a_message_already_done_is_acked_and_one_cancelled_before_it_ran_too_with_no_record() -> None:
    job = make_job()
    done = settle(Dropped(job.delivery))
    assert isinstance(done, Ack) and done.record is None and done.job is None
    cancelled = settle(Dropped(job.delivery, job))
    assert isinstance(cancelled, Cancelled) and cancelled.record is None and cancelled.job is job


def test_decide_is_pure() -> None:
    job = make_job(retries=2)
    before = msgspec.structs.asdict(job.envelope)
    first = settle(failed(job, ValueError("x")))
    assert settle(failed(job, ValueError("x"))) == first
    assert msgspec.structs.asdict(job.envelope) == before
