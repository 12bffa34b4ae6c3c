"""The lifecycle audit's rules. Charging: a request sent after a bar or terminate was answered
must not be answered DIAMETER_SUCCESS, except the final CCR-TERMINATION (usage from before).
Refusals: a request refused for its line's status (4010, 5030) must come after a change that
suspended, barred or terminated the line was asked for. The whole scenario runs against the real
server in test_scenarios.py; this pins the rules on recorded requests, so that a rule that could
never fire would be caught."""

from __future__ import annotations

import random

from simulator.http_api import OcsApi
from simulator.lifecycle import Lifecycle, LifecycleChange, LifecycleSettings
from simulator.records import Recorder

LINE = "line-1"


def _lifecycle_after_bar(requests: list[tuple[float, str, int]]) -> Lifecycle:
    recorder = Recorder()
    for sent, kind, code in requests:
        recorder.line_request(LINE, sent, kind, code)
    lifecycle = Lifecycle(LifecycleSettings(), OcsApi("http://127.0.0.1:9"), recorder, (), (), set, random.Random(1))
    lifecycle.changes.append(LifecycleChange("bar_line", LINE, (LINE,), 10.0, 1, 10.5))
    return lifecycle


def test_a_success_after_the_bar_was_answered_is_a_problem() -> None:
    lifecycle = _lifecycle_after_bar([(9.0, "CCR-I", 2001), (10.6, "CCR-U", 2001)])
    lifecycle.audit_charging()
    assert len(lifecycle.problems) == 1 and "CCR-U" in lifecycle.problems[0]


def test_refusals_and_the_final_report_after_the_bar_are_fine() -> None:
    lifecycle = _lifecycle_after_bar([(10.2, "CCR-U", 2001), (10.6, "CCR-I", 4010), (10.7, "CCR-T", 2001)])
    lifecycle.audit_charging()
    assert lifecycle.problems == []


def _lifecycle_with_refusals(answered: list[float], step: str) -> Lifecycle:
    recorder = Recorder()
    for moment in answered:
        recorder.status_refused(LINE, moment)
    lifecycle = Lifecycle(LifecycleSettings(), OcsApi("http://127.0.0.1:9"), recorder, (), (), set, random.Random(1))
    lifecycle.changes.append(LifecycleChange(step, LINE, (LINE,), 10.0, 1, 10.5))
    return lifecycle


def test_a_refusal_for_the_line_status_needs_a_change_asked_for_before_it() -> None:
    # Answered after the suspend was asked for (even before the API answered): explained.
    explained = _lifecycle_with_refusals([10.2, 12.0], "suspend_line")
    explained.audit_refusals()
    assert explained.problems == []
    # Before any change, or with only a resume behind it: the line was active, a problem each.
    unexplained = _lifecycle_with_refusals([9.0, 12.0], "resume_line")
    unexplained.audit_refusals()
    assert len(unexplained.problems) == 2 and all(LINE in problem for problem in unexplained.problems)


def test_a_refusal_after_a_dunning_step_asked_for_before_it_is_explained() -> None:
    """The billing calendar's dunning steps (restrict, bar, terminate) change lines too: a refusal
    after one was asked for is explained, one before it is not."""
    lifecycle = _lifecycle_with_refusals([8.0, 9.0], "resume_line")
    lifecycle.audit_refusals([(LINE, 8.5), ("another-line", 1.0)])
    assert len(lifecycle.problems) == 1  # the refusal at 8.0 came before the dunning step at 8.5
