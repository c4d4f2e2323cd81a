"""Which tasks run inline on the consumer thread: learned from timings, undone when they turn slow."""

from __future__ import annotations

from chute.worker.speed import FAST, LEARN_RUNS, Speeds


def test_a_task_qualifies_on_its_fastest_threaded_run_despite_gil_inflated_averages() -> None:
    speeds = Speeds()
    for i in range(LEARN_RUNS - 1):  # mostly inflated by waiting for the GIL, once fast
        speeds.record("t", FAST / 4 if i == 3 else FAST * 4, inline=False)
    assert not speeds.runs_inline("t")  # not enough runs yet
    speeds.record("t", FAST * 4, inline=False)
    assert speeds.runs_inline("t")
    assert not speeds.runs_inline("never-seen")


def test_a_task_that_is_slow_inline_goes_back_to_the_threads_and_must_qualify_again() -> None:
    speeds = Speeds()
    for _ in range(LEARN_RUNS):
        speeds.record("t", FAST / 10, inline=False)
    for _ in range(50):
        speeds.record("t", FAST / 10, inline=True)
    assert speeds.runs_inline("t") and speeds.estimate("t") < FAST
    speeds.record("t", FAST * 50, inline=True)  # one very slow inline run moves the average past the limit
    assert not speeds.runs_inline("t")
    for _ in range(LEARN_RUNS - 1):
        speeds.record("t", FAST / 10, inline=False)
    assert not speeds.runs_inline("t")
    speeds.record("t", FAST / 10, inline=False)
    assert speeds.runs_inline("t")


def test_never_fast_never_inline() -> None:
    speeds = Speeds()
    for _ in range(10 * LEARN_RUNS):
        speeds.record("t", FAST * 2, inline=False)
    assert not speeds.runs_inline("t")
