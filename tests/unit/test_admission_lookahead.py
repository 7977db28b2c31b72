"""The worker's lookahead: one more job per job waiting for KV, at most `limit` at once."""

from __future__ import annotations

from contextlib import ExitStack

from workers.admission.lookahead import Lookahead


def test_one_extra_job_per_waiting_job_up_to_the_limit() -> None:
    applied: list[int] = []
    lookahead = Lookahead(2, applied.append)
    with ExitStack() as stack:
        for _ in range(3):  # the third waits without a job more: the limit is 2
            stack.enter_context(lookahead.waiting())
        assert lookahead.extra == 2
    assert applied == [1, 2, 1, 0] and lookahead.extra == 0


def test_given_back_when_the_wait_ends_in_an_error() -> None:
    applied: list[int] = []
    lookahead = Lookahead(4, applied.append)
    try:
        with lookahead.waiting():
            raise TimeoutError("cancelled while waiting")
    except TimeoutError:
        pass
    assert applied == [1, 0] and lookahead.extra == 0


def test_off_takes_nothing_more() -> None:
    applied: list[int] = []
    with Lookahead(0, applied.append).waiting():
        pass
    assert applied == []
