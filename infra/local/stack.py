"""The whole of citeq on one machine: moto on 127.0.0.1 (queues and tables created from template.yaml's own
definitions), the assistant emulator with the sample documents, the worker fed by a poller that follows
Lambda's SQS event-source semantics, the dispatcher fed by the table's change stream the way Lambda's
DynamoDB event source does, and the reconciler on a timer (the template's schedule)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from citeq.config import Settings, redact
from infra.emulator.plan import REALISTIC_CONTEXT_TOKENS, PlanConfig
from infra.emulator.process import EmulatorProcess
from infra.local.apps import FunctionUrlAdapter, UvicornThread
from infra.local.context import LambdaContext
from infra.local.poller import Poller
from infra.local.stream_poller import StreamPoller
from infra.local.template import (
    TEMPLATE,
    create_resources,
    dispatcher_settings,
    load,
    local_resources,
    worker_settings,
)

if TYPE_CHECKING:
    from callback.app import Callbacks

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DOCS = ROOT / "samples" / "docs"
REGION = "us-east-1"
STACK_NAME = "citeq-local"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class LocalStack:
    """Start with ``start()`` (or as a context manager); ``env`` holds the variables that point at it.

    The emulator runs on ``plan`` (default Standard: 300k chat input tokens a minute) with realistic prompt sizes
    and latency; ``tokens_per_minute`` and the quotas replace the plan's (0: unlimited), ``plan=None`` and
    ``latency="none"`` give the unlimited, instant emulator. citeq's workers pace to the plan's limit
    (``CITEQ_TOKENS_PER_MINUTE``) unless ``pacing`` names another rate (or None: no pacing).
    """

    def __init__(
        self,
        *,
        docs: Path | None = SAMPLE_DOCS,
        assistant: str = "citeq-demo",
        poll: bool = True,
        template: Path = TEMPLATE,
        worker_env: dict[str, str] | None = None,
        max_concurrency: int | None = None,
        visibility_timeout: int | None = None,
        callback_visibility_timeout: int | None = None,
        worker_timeout: int | None = None,
        reconcile_every: float = 60.0,
        sweep_every: float = 600.0,
        plan: str | None = "standard",
        tokens_per_minute: int | None = None,
        quota_input_tokens: int | None = None,
        quota_output_tokens: int | None = None,
        context_tokens: str | tuple[int, int] | None = REALISTIC_CONTEXT_TOKENS,
        latency: str = "realistic",
        pacing: int | str | None = "plan",
        processing_seconds: float = 0.0,
    ) -> None:
        self.docs = docs
        # How long the emulator keeps each uploaded file Processing (0 for tests; the demo and
        # ``python -m infra.local`` pass a realistic delay and ``start`` waits for the files).
        self.processing_seconds = processing_seconds
        self.plan = PlanConfig.of(
            plan,
            tokens_per_minute=tokens_per_minute,
            quota_input_tokens=quota_input_tokens,
            quota_output_tokens=quota_output_tokens,
            context_tokens=context_tokens if context_tokens is not None else "measured",
        )
        self.latency = latency
        self.assistant = assistant
        self.poll = poll
        self.template = load(template)
        self.settings = worker_settings(self.template)
        self.worker_env = worker_env or {}
        self.max_concurrency = max_concurrency or self.settings.max_concurrency
        # Tests shorten the queue's visibility timeout (template: 750 s) to see redeliveries quickly.
        self.visibility_timeout = visibility_timeout
        # ...and the callback queue's (template: 180 s), and the worker's timeout (template: 120 s), which is
        # how long a claimed request's lease lasts (at least 6 s: the call deadline keeps 3 s back, an attempt
        # needs 2 s).
        self.callback_visibility_timeout = callback_visibility_timeout
        self.worker_timeout = worker_timeout
        # The template runs the reconciler every minute; tests shorten it.
        self.reconcile_every = reconcile_every
        # ...and its sweep for stranded requests every 10 minutes (CITEQ_STRANDED_AFTER_SECONDS sets how still a
        # request must have been, through ``worker_env``).
        self.sweep_every = sweep_every
        # citeq's CITEQ_TOKENS_PER_MINUTE: the emulated plan's limit unless a test configures another (or None).
        self.pacing = self.plan.tokens_per_minute if pacing == "plan" else pacing
        self.dispatcher_settings = dispatcher_settings(self.template)
        self.env: dict[str, str] = {}
        self.resources: dict[str, str] = {}
        self.poller: Poller | None = None
        self.callback_poller: Poller | None = None
        self.stream_poller: StreamPoller | None = None
        self.worker_handler: Callable[[dict[str, Any], Any], Any] | None = None
        # The collaborators the handlers use (tests hook their boto3 clients' events to inject failures).
        self.worker: Any = None
        self.dispatcher: Any = None
        self.dispatcher_handler: Callable[[dict[str, Any], Any], Any] | None = None
        self.reconciler_handler: Callable[[dict[str, Any], Any], Any] | None = None
        self._reconciling = threading.Event()
        self._reconciler: threading.Thread | None = None
        # The settings every function was built from (the environment below, read once, as a cold start would).
        self.function_settings: Settings | None = None
        self.callback: Callbacks | None = None
        self.callback_handler: Callable[[dict[str, Any], Any], Any] | None = None
        self.stream: UvicornThread | None = None
        self.webhook: FunctionUrlAdapter | None = None
        # Local secrets: a bearer key for the streaming routes, webhook secrets (two: rotation), a callback secret.
        self.api_key = "citeq-local-" + secrets.token_hex(8)
        # A second key, limited to an assistant the stack does not have (scope tests; issue 11).
        self.limited_key = "citeq-local-limited-" + secrets.token_hex(8)
        self.limited_assistant = "limited-only"
        self.webhook_secrets = ["whsec_" + base64.b64encode(secrets.token_bytes(24)).decode() for _ in range(2)]
        self.callback_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        for secret in (self.api_key, self.limited_key, *self.webhook_secrets, self.callback_secret):
            redact(secret)  # before anything (the stack's own CreateSecret calls included) can log one
        self._saved_env: dict[str, str | None] = {}
        self._motos: list[subprocess.Popen[str]] = []
        self.emulator: EmulatorProcess | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalStack:
        """Start moto, create the resources, start the emulator and the worker poller."""
        # The emulator runs in its own process, like the real assistant: its CPU stays off the worker's GIL.
        # Started first, so its files process while moto starts.
        self.emulator = EmulatorProcess(
            docs=self.docs,
            assistant=self.assistant,
            plan=self.plan,
            latency=self.latency,
            processing_seconds=self.processing_seconds,
        ).start()
        # Two moto servers, one for DynamoDB (and everything else) and one for SQS: each moto process is
        # bound to one core by its GIL, and AWS is not one process either. Services never talk to each other.
        self.endpoint = self._start_moto()
        self.sqs_endpoint = self._start_moto()
        self._set_env({**FAKE_AWS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_SQS": self.sqs_endpoint})
        self._create_resources()
        self._set_env(
            {
                "CITEQ_TABLE": self.resources["ResultsTable"],
                "CITEQ_QUEUE_URL": self.resources["RequestsQueue"],
                "CITEQ_DLQ_URL": self.resources["RequestsDeadLetterQueue"],
                "CITEQ_ASSISTANT": self.assistant,
                "CITEQ_PINECONE_HOST": self.emulator.url,
                "PINECONE_API_KEY": self.emulator.api_key,
                "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "1"),
                "POWERTOOLS_TRACE_DISABLED": "1",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                **{k: str(v) for k, v in self.settings.environment.items() if isinstance(v, str | int)},
                "CITEQ_CALLBACK_QUEUE_URL": self.resources["CallbackQueue"],
                # In Secrets Manager, as in Lambda: the functions read them through Powertools.
                "CITEQ_CALLBACK_SECRET_ARN": self._put_secret("citeq/local/callback", self.callback_secret),
                "CITEQ_CALLBACK_ALLOW_HOSTS": "127.0.0.1,localhost",
                "CITEQ_WEBHOOK_SECRETS_ARN": self._put_secret("citeq/local/webhooks", ",".join(self.webhook_secrets)),
                "CITEQ_API_KEY_HASHES": ",".join(
                    [
                        hashlib.sha256(self.api_key.encode()).hexdigest(),
                        hashlib.sha256(self.limited_key.encode()).hexdigest() + ":" + self.limited_assistant,
                    ]
                ),
                "CITEQ_TOKENS_PER_MINUTE": str(self.pacing or "none"),
                **self.worker_env,
            }
        )
        # A stack started earlier in this process left Powertools' provider (a client bound to its endpoint) and
        # its cached secret values behind: this stack's secrets are new.
        from aws_lambda_powertools.utilities import parameters

        parameters.clear_caches()
        self._build_functions()
        assert self.stream is not None and self.webhook is not None
        self.env["CITEQ_STREAM_URL"] = self.stream.url
        self.env["CITEQ_WEBHOOK_URL"] = self.webhook.url
        # A chat before any file is Available gets the service's 400, so nothing is asked until they are.
        self.emulator.wait_until_available()
        if self.poll:
            self.start_poller()
        return self

    def _build_functions(self) -> None:
        """Every function's handler, built by its own builder from the environment as a cold start would; the
        stream and webhook functions served on loopback."""
        from callback import app as callback_app
        from dispatcher import app as dispatcher_app
        from reconciler import app as reconciler_app

        from stream import app as stream_app
        from webhook import app as webhook_app
        from worker import app as worker_app

        settings = self.function_settings = Settings.from_env()
        self.worker = worker_app.build(settings)
        self.worker_handler = worker_app.handler_for(self.worker, settings.worker_concurrency)
        self.dispatcher = dispatcher_app.build(settings)
        self.dispatcher_handler = dispatcher_app.handler_for(self.dispatcher)
        self.reconciler_handler = reconciler_app.build(settings)
        self.callback = callback_app.build(settings)
        self.callback_handler = callback_app.handler_for(self.callback)
        self.stream = UvicornThread(stream_app.create_app(settings)).start()
        self.webhook = FunctionUrlAdapter(webhook_app.build(settings)).start()
        # The dispatcher runs even when the worker does not poll: storing a request is what queues it.
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        arn = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=self.table)["Table"]
        self.stream_poller = StreamPoller(
            streams,
            arn["LatestStreamArn"],
            self.dispatcher_handler,
            batch_size=self.dispatcher_settings.batch_size,
            filters=self.dispatcher_settings.filters,
            timeout=self.dispatcher_settings.timeout,
        ).start()
        self._reconciler = threading.Thread(target=self._reconcile_loop, name="citeq-reconciler", daemon=True)
        self._reconciler.start()

    def use_pacing(self, tokens_per_minute: int | None) -> None:
        """Redeploy the worker with another ``CITEQ_TOKENS_PER_MINUTE`` (None: unpaced), as a parameter update
        would; the poller calls the new handler from its next invocation."""
        from worker import app as worker_app

        self.pacing = tokens_per_minute
        self._set_env({"CITEQ_TOKENS_PER_MINUTE": str(tokens_per_minute or "none")})
        settings = Settings.from_env()
        self.worker = worker_app.build(settings)
        self.worker_handler = worker_app.handler_for(self.worker, settings.worker_concurrency)
        if self.poller is not None:
            self.poller.handler = self.worker_handler

    def _reconcile_loop(self) -> None:
        import logging

        # Two schedules, as the template's two events: each fires on its own period.
        due = {"reconcile": time.monotonic() + self.reconcile_every, "sweep": time.monotonic() + self.sweep_every}
        while not self._reconciling.wait(max(0.0, min(due.values()) - time.monotonic())):
            for name, run, every in (
                ("reconcile", self.reconcile, self.reconcile_every),
                ("sweep", self.sweep, self.sweep_every),
            ):
                if time.monotonic() < due[name]:
                    continue
                due[name] = time.monotonic() + every
                try:
                    run()
                except Exception:  # the schedule fires again next time, as EventBridge would
                    logging.getLogger("infra.local.stack").exception("reconciler invocation (%s) failed", name)

    def reconcile(self) -> int:
        """Run the reconciler once now; returns how many dead-lettered requests it failed."""
        assert self.reconciler_handler is not None
        result = self.reconciler_handler({"source": "aws.events"}, LambdaContext(timeout_seconds=60))
        return int(result["reconciled"])

    def sweep(self) -> dict[str, Any]:
        """Run the reconciler's sweep once now (the template's 10-minute schedule); ``Swept.to_dict``."""
        assert self.reconciler_handler is not None
        result = self.reconciler_handler({"sweep": True}, LambdaContext(timeout_seconds=60))
        return dict(result["swept"])

    def wait_dispatched(self, timeout: float = 30.0) -> bool:
        """Wait until the dispatcher has caught up with every write so far."""
        assert self.stream_poller is not None
        return self.stream_poller.wait_idle(timeout)

    def start_worker(self, handler: Callable[[dict[str, Any], Any], Any] | None = None) -> Poller:
        """Start the worker's event source mapping alone (``start_poller`` starts it with the callback
        function's), calling ``handler`` (default: the worker's); ``stop_worker`` stops it."""
        assert self.worker_handler is not None
        sqs = boto3.client("sqs", region_name=REGION)
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.poller = Poller(
            sqs,
            self.queue_url,
            arn,
            handler or self.worker_handler,
            batch_size=self.settings.batch_size,
            window=self.settings.window,
            max_concurrency=self.max_concurrency,
            timeout=self.worker_timeout or self.settings.timeout,
            region=REGION,
        ).start()
        return self.poller

    def stop_worker(self) -> None:
        """Stop feeding the worker (as disabling its event source mapping would); running invocations finish."""
        if self.poller is not None:
            self.poller.stop()

    def start_poller(self) -> Poller:
        """Start feeding the worker (call after ``start(poll=False)`` to control when work begins)."""
        worker = self.start_worker()
        sqs = boto3.client("sqs", region_name=REGION)
        # The callback function's SQS event source (template: BatchSize 10, window 1 s, timeout 30 s).
        assert self.callback_handler is not None
        callback_url = self.resources["CallbackQueue"]
        attrs = sqs.get_queue_attributes(QueueUrl=callback_url, AttributeNames=["QueueArn"])["Attributes"]
        self.callback_poller = Poller(
            sqs,
            callback_url,
            attrs["QueueArn"],
            self.callback_handler,
            batch_size=10,
            window=0.2,
            max_concurrency=2,
            timeout=30,
            region=REGION,
        ).start()
        return worker

    def stop(self) -> None:
        """Stop everything (each part even if another fails to stop) and restore the environment."""
        stoppers = [p.stop for p in (self.poller, self.callback_poller, self.stream_poller) if p]
        stoppers.append(self._reconciling.set)
        stoppers += [a.stop for a in (self.stream, self.webhook, self.emulator) if a]
        stoppers += [moto.terminate for moto in self._motos]
        with contextlib.ExitStack() as stack:
            for stop in reversed(stoppers):  # ExitStack runs callbacks last-in, first-out
                stack.callback(stop)
        for moto in self._motos:
            try:
                moto.wait(10)
            except subprocess.TimeoutExpired:  # its state is in memory only: nothing is lost (issue 14's 10k run)
                moto.kill()
                moto.wait()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pieces
    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
            self.env[name] = value

    def _start_moto(self) -> str:
        # A thread per poller's long poll (two per worker slot with prefetch, the callback pollers), and room.
        threads = str(32 + 2 * self.max_concurrency)
        moto = subprocess.Popen(
            [sys.executable, "-m", "infra.local.moto_process", "--threads", threads],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._motos.append(moto)
        assert moto.stdout is not None
        endpoint = moto.stdout.readline().strip()
        if not endpoint.startswith("http://127.0.0.1:"):
            raise RuntimeError("moto server did not start")
        return endpoint

    def _create_resources(self) -> None:
        """Create the template's own queue and table definitions in moto through CloudFormation (the queues
        in the SQS server's moto, the tables in the other)."""
        body = local_resources(self.template)
        self.resources = {}
        for endpoint, kind in ((self.sqs_endpoint, "AWS::SQS::Queue"), (self.endpoint, "AWS::DynamoDB::Table")):
            part = {**body, "Resources": {k: v for k, v in body["Resources"].items() if v["Type"] == kind}}
            self.resources.update(
                create_resources(
                    part,
                    cloudformation=boto3.client("cloudformation", region_name=REGION, endpoint_url=endpoint),
                    dynamodb=boto3.client("dynamodb", region_name=REGION),
                    stack_name=STACK_NAME,
                )
            )
        for url, seconds in (
            (self.queue_url, self.visibility_timeout),
            (self.resources["CallbackQueue"], self.callback_visibility_timeout),
        ):
            if seconds is not None:
                boto3.client("sqs", region_name=REGION).set_queue_attributes(
                    QueueUrl=url, Attributes={"VisibilityTimeout": str(seconds)}
                )

    @staticmethod
    def _put_secret(name: str, value: str) -> str:
        """Store a secret in moto's Secrets Manager; returns its ARN."""
        client = boto3.client("secretsmanager", region_name=REGION)
        return str(client.create_secret(Name=name, SecretString=value)["ARN"])

    # ------------------------------------------------------------------ conveniences
    @property
    def queue_url(self) -> str:
        """The requests queue."""
        return self.resources["RequestsQueue"]

    @property
    def dlq_url(self) -> str:
        """The dead-letter queue."""
        return self.resources["RequestsDeadLetterQueue"]

    @property
    def table(self) -> str:
        """The results table."""
        return self.resources["ResultsTable"]

    def exports(self) -> str:
        """Shell ``export`` lines for the variables that point at this stack."""
        keys = [
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_SQS",  # SQS has a moto process of its own
            *FAKE_AWS,
            "CITEQ_TABLE",
            "CITEQ_QUEUE_URL",
            "CITEQ_DLQ_URL",
            "CITEQ_CALLBACK_QUEUE_URL",
            "CITEQ_ASSISTANT",
            "CITEQ_PINECONE_HOST",
            "PINECONE_API_KEY",
            "CITEQ_TOKENS_PER_MINUTE",  # so `batch status` shows the budget the workers pace to
            "CITEQ_STREAM_URL",
            "CITEQ_WEBHOOK_URL",
        ]
        lines = [f"export {k}={self.env[k]}" for k in keys if k in self.env]
        lines.append(f"# bearer key for the stream URL: {self.api_key}")
        lines.append(f"# webhook secrets: {', '.join(self.webhook_secrets)}")
        return "\n".join(lines)
