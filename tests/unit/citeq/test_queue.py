"""``citeq.queue`` against moto's SQS in process (the ``aws`` fixture: the template's queues): sending in
batches with partial failures retried, visibility changes, the DLQ, and SQS errors as QueueError."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from citeq.errors import AWSError, ConfigurationError, QueueError, StoreError
from citeq.queue import MAX_DELAY, MAX_VISIBILITY, SEND_ATTEMPTS, Queue


class Flaky:
    """A real SQS client whose first ``send_message_batch`` calls fail some entries, as SQS may."""

    def __init__(self, real: Any, failures: list[dict[str, dict[str, Any]]]) -> None:
        self.real = real
        self.failures = list(failures)  # per call: entry id -> the Failed entry SQS would report
        self.batches: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append([entry["Id"] for entry in Entries])
        failing = self.failures.pop(0) if self.failures else {}
        sent = [entry for entry in Entries if entry["Id"] not in failing]
        result = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=sent) if sent else {"Successful": []}
        return {
            "Successful": result.get("Successful", []),
            "Failed": [{"Id": entry_id, **failure} for entry_id, failure in failing.items()],
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _bodies(url: str, *, visibility: int = 30) -> list[str]:
    sqs = boto3.client("sqs")
    found: list[str] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility).get(
        "Messages", []
    ):
        found.extend(m["Body"] for m in batch)
    return sorted(found)


def test_send_goes_in_batches_of_ten_and_every_message_arrives(aws: dict[str, str]) -> None:
    flaky = Flaky(boto3.client("sqs"), [])
    queue = Queue(aws["RequestsQueue"], client=flaky, sleep=lambda _: None)
    queue.send([(f"r{i}", f"body-{i:02}") for i in range(23)])
    assert sorted(len(batch) for batch in flaky.batches) == [3, 10, 10]
    assert _bodies(aws["RequestsQueue"]) == [f"body-{i:02}" for i in range(23)]


def test_a_delay_is_sent_capped_at_sqs_s_fifteen_minutes(aws: dict[str, str]) -> None:
    sent: list[list[dict[str, Any]]] = []
    real = boto3.client("sqs")

    class Recording(Flaky):
        def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            sent.append(Entries)
            return super().send_message_batch(QueueUrl, Entries)

    Queue(aws["RequestsQueue"], client=Recording(real, [])).send([("a", "x", 5), ("b", "y", 3600), ("c", "z", -1)])
    assert [entry.get("DelaySeconds") for entry in sent[0]] == [5, MAX_DELAY, 0]


def test_entries_sqs_fails_for_its_own_reasons_are_retried_until_they_go(aws: dict[str, str]) -> None:
    throttled = {"SenderFault": False, "Code": "ServiceUnavailable"}
    flaky = Flaky(boto3.client("sqs"), [{"m0": throttled, "m2": throttled}, {"m2": throttled}])
    sleeps: list[float] = []
    Queue(aws["RequestsQueue"], client=flaky, sleep=sleeps.append).send([("a", "A"), ("b", "B"), ("c", "C")])
    assert flaky.batches == [["m0", "m1", "m2"], ["m0", "m2"], ["m2"]]
    assert sleeps == [0.1, 0.2]
    assert _bodies(aws["RequestsQueue"]) == ["A", "B", "C"]


def test_an_entry_sqs_refuses_as_malformed_is_not_retried_and_send_names_it(aws: dict[str, str]) -> None:
    malformed = {"SenderFault": True, "Code": "InvalidMessageContents"}
    flaky = Flaky(boto3.client("sqs"), [{"m1": malformed}])
    queue = Queue(aws["RequestsQueue"], client=flaky, sleep=lambda _: None)
    assert queue.try_send([("a", "A"), ("b", "B")]) == ["b: InvalidMessageContents"]
    assert len(flaky.batches) == 1
    with pytest.raises(QueueError, match=r"did not accept 1 messages.*'b: InvalidMessageContents'"):
        Queue(aws["RequestsQueue"], client=Flaky(boto3.client("sqs"), [{"m0": malformed}])).send([("b", "B")])


def test_an_entry_that_keeps_failing_is_given_up_after_the_attempts(aws: dict[str, str]) -> None:
    always = [{"m0": {"SenderFault": False, "Code": "InternalError"}}] * SEND_ATTEMPTS
    flaky = Flaky(boto3.client("sqs"), always)
    assert Queue(aws["RequestsQueue"], client=flaky, sleep=lambda _: None).try_send([("a", "A")]) == [
        "a: InternalError"
    ]
    assert len(flaky.batches) == SEND_ATTEMPTS


def test_an_sqs_error_is_a_queue_error_with_aws_s_code_not_a_store_error(aws: dict[str, str]) -> None:
    missing = aws["RequestsQueue"].rsplit("/", 1)[0] + "/no-such-queue"
    with pytest.raises(QueueError) as raised:
        Queue(missing).depth()
    assert isinstance(raised.value, AWSError) and not isinstance(raised.value, StoreError)
    assert raised.value.code is not None and "NonExistentQueue" in raised.value.code
    assert raised.value.retryable and not raised.value.credentials


def test_delay_clamps_the_visibility_to_what_sqs_accepts() -> None:
    calls: list[dict[str, Any]] = []

    class Recording:
        def change_message_visibility(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    queue = Queue("https://sqs.us-east-1.amazonaws.com/123456789012/q", client=Recording())
    for seconds in (99_999, 2.6, -4):
        queue.delay("handle", seconds)
    assert [call["VisibilityTimeout"] for call in calls] == [MAX_VISIBILITY, 3, 0]
    assert {call["ReceiptHandle"] for call in calls} == {"handle"}


def test_a_delayed_message_comes_back_after_its_delay(aws: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    url = aws["RequestsQueue"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    queue = Queue(url)
    queue.delay(handle, 600)
    assert _bodies(url) == []  # hidden for ten minutes
    queue.delay(handle, 0)
    assert _bodies(url) == ["x"]


def test_depth_counts_visible_in_flight_and_delayed(aws: dict[str, str]) -> None:
    queue = Queue(aws["RequestsQueue"])
    queue.send([("a", "A"), ("b", "B"), ("c", "C", 600)])
    boto3.client("sqs").receive_message(QueueUrl=aws["RequestsQueue"], MaxNumberOfMessages=1)
    assert queue.depth() == {"visible": 1, "in_flight": 1, "delayed": 1}


def test_dead_letters_are_listed_once_released_redriven_and_deleted(aws: dict[str, str]) -> None:
    main, dlq = aws["RequestsQueue"], aws["RequestsDeadLetterQueue"]
    queue = Queue(main, dlq_url=dlq)
    queue.send([(f"d{i}", f"letter-{i}") for i in range(3)], url=dlq)
    letters = queue.dead_letters(limit=10)
    assert sorted(letter.body for letter in letters) == ["letter-0", "letter-1", "letter-2"]
    assert all(letter.receive_count == 1 and letter.sent_at > 0 for letter in letters)
    assert queue.dead_letters(limit=10) == []  # held invisible: one listing sees each once
    queue.release(letters)
    letters = sorted(queue.dead_letters(limit=10), key=lambda letter: letter.body)
    assert [letter.receive_count for letter in letters] == [2, 2, 2]
    queue.redrive(letters[:2])
    queue.delete_letters(letters[2:])
    assert _bodies(main) == ["letter-0", "letter-1"]
    queue.release(queue.dead_letters(limit=10))
    assert _bodies(dlq) == []


def test_dead_letters_without_a_hold_lists_each_message_once_and_stops(aws: dict[str, str]) -> None:
    queue = Queue(aws["RequestsQueue"], dlq_url=aws["RequestsDeadLetterQueue"])
    queue.send([("d0", "zero"), ("d1", "one")], url=queue.dlq_url)
    letters = queue.dead_letters(limit=10, hold_seconds=0)
    assert sorted(letter.body for letter in letters) == ["one", "zero"]


@pytest.mark.parametrize("call", ["dead_letters", "release", "delete_letters"])
def test_dlq_operations_without_a_dlq_url_are_a_configuration_error(call: str) -> None:
    queue = Queue("https://sqs.us-east-1.amazonaws.com/123456789012/q", client=object())
    with pytest.raises(ConfigurationError, match="CITEQ_DLQ_URL"):
        getattr(queue, call)(*([] if call == "dead_letters" else [[]]))
