"""The composition root: one ``Factory`` turns ``Settings`` into citeq's collaborators.

The CLI asks it for a store, a queue, a client or the token budget per command; each function's ``build``
asks it once per container for its worker, dispatcher, deliverer or store. Each method fails with
ConfigurationError naming the environment variable when a setting it needs is missing. Nothing here holds
state between calls: two calls build two objects (tests pass their own instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from citeq.budget import TokenBudget
from citeq.callbacks import CallbackDeliverer
from citeq.client import AssistantClient
from citeq.config import Settings
from citeq.dispatch import Dispatcher
from citeq.pacing import Pacer, Unpaced
from citeq.queue import Queue
from citeq.retry import RetryPolicy
from citeq.store import Store, dynamodb_client
from citeq.worker import NoMetrics, Recorder, Worker

# The worker's in-process attempts per assistant call: an invocation has a deadline, and SQS redelivers
# anyway, so at most this many whatever CITEQ_MAX_ATTEMPTS says (a lower setting still applies).
WORKER_MAX_ATTEMPTS = 3
# The longest Retry-After the worker waits in process; a longer one goes back to SQS as a delay.
WORKER_MAX_RETRY_AFTER = 5.0


class Factory:
    """Builds the collaborators the CLI and the functions need from one ``Settings`` (read from the environment
    on first use when none is given)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        """The settings given, else the environment's, read once."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def client(self, *, policy: RetryPolicy | None = None) -> AssistantClient:
        """An assistant client (its retry policy from ``CITEQ_MAX_ATTEMPTS`` unless ``policy`` is given); resolves
        the API key now (from Secrets Manager in Lambda)."""
        self.settings.require("api_key")
        return AssistantClient(self.settings, policy=policy)

    def store(self, *, client: Any = None) -> Store:
        """The results table's store; its DynamoDB client is made on first use unless ``client`` is given (pass
        one made up front when threads will share the store: making boto3 clients is not thread-safe)."""
        self.settings.require("table")
        return Store(self.settings.table or "", client=client, ttl_days=self.settings.result_ttl_days)

    def queue(self) -> Queue:
        """The requests queue, with its DLQ when ``CITEQ_DLQ_URL`` is set."""
        self.settings.require("queue_url")
        return Queue(self.settings.queue_url or "", dlq_url=self.settings.dlq_url)

    def callback_queue(self) -> Queue:
        """The callback jobs' queue."""
        self.settings.require("callback_queue_url")
        return Queue(self.settings.callback_queue_url or "")

    def budget(self, store: Store | None = None) -> TokenBudget | None:
        """The token budget the workers share (in ``store``, else a new store); None when calls are not paced
        (``CITEQ_TOKENS_PER_MINUTE`` unset or ``none``)."""
        if not self.settings.tokens_per_minute:
            return None
        return TokenBudget(
            store or self.store(),
            self.settings.tokens_per_minute,
            window=self.settings.token_window_seconds,
            pause=self.settings.quota_probe_seconds,
        )

    def pacer(self, store: Store | None = None) -> Pacer:
        """The token budget when calls are paced, else ``Unpaced``."""
        return self.budget(store) or Unpaced()

    def worker(self, *, recorder: Recorder | None = None) -> Worker:
        """The worker: store, client, requests queue and pacer; metrics to ``recorder`` (default: dropped).

        Its records run on threads, so the DynamoDB client is made now. Retries in process are few and short,
        and never for 429s: a rate-limited request is put off through the pacer without spending a delivery.
        """
        self.settings.require("table", "queue_url", "api_key")
        store = self.store(client=dynamodb_client())
        policy = RetryPolicy(
            max_attempts=min(WORKER_MAX_ATTEMPTS, self.settings.max_attempts),
            max_retry_after=WORKER_MAX_RETRY_AFTER,
            retry_rate_limits=False,
        )
        return Worker(
            store,
            self.client(policy=policy),
            self.queue(),
            max_receives=self.settings.max_receives,
            pacer=self.pacer(store),
            recorder=recorder or NoMetrics(),
        )

    def dispatcher(self) -> Dispatcher:
        """The dispatcher over the requests queue and, when ``CITEQ_CALLBACK_QUEUE_URL`` is set, the callback
        queue."""
        callbacks = self.callback_queue() if self.settings.callback_queue_url else None
        return Dispatcher(self.queue(), callbacks)

    def deliverer(self, secret: Callable[[], str]) -> CallbackDeliverer:
        """The callback deliverer, signing with what ``secret()`` returns at each delivery (a rotated secret
        arrives); deliveries run on threads, so the DynamoDB client is made now."""
        self.settings.require("table")
        store = self.store(client=dynamodb_client())
        return CallbackDeliverer(store, secret, allow_hosts=self.settings.callback_allow_hosts)

    def clock(self) -> float:
        """Wall-clock seconds."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (tests pass a factory whose sleep does not)."""
        time.sleep(seconds)
