"""The assistant's plan: chat input tokens per minute, the organization's token quotas, and how many prompt
tokens a chat is charged for. No HTTP here: ``server.py`` renders the errors raised.

Facts (``shared/reference/pinecone-assistant-api.md`` §7.2, ``service-fidelity.md`` "Rate and quota limits"):
- chat input tokens per minute: Starter 100k, Builder 200k, Standard 300k, Enterprise 1M; the limits are
  scoped to the organization, so every assistant of the emulator draws from one window;
- monthly quotas (Starter 500k chat input / 300k chat output tokens, Builder 2M / 1M, paid plans none); the
  older page in §7.2 gave Starter 1.5M / 200k; the newer figures are used here;
- over the per-minute limit: ``429 TOO_MANY_REQUESTS`` in the common error body, with no ``Retry-After``
  (none is documented); over a quota: ``403`` coded ``QUOTA_EXCEEDED`` with a "Request failed. You've reached
  the max ..." message, as Pinecone's quota pages show (https://docs.pinecone.io/reference/quotas-and-limits);
- prompt tokens include the injected context (up to 16 snippets of up to 2,048 tokens), 9k-26k per answer in
  every real sample, so the emulator charges a context size drawn per question from a tunable range.

Not documented, chosen here [infer]:
- the 429 message for chat tokens: the spec's only example is "Too many get or list assistant requests, try
  again later", and this one follows its form;
- the window slides over the last 60 s (never kinder than a fixed minute); a request is refused when its input
  tokens would take the window over the limit, unless the window is empty (so a single request larger than
  the limit is not refused forever); refused requests are not charged;
- the quotas run from the emulator's start (a month outlasts any local run) until reset.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from infra.emulator.exceptions import QuotaExceeded, TooManyRequests

WINDOW_SECONDS = 60.0
# Prompt tokens of the retrieved context in real answers: 8,873-26,387 (service-fidelity.md, usage.prompt_tokens).
REALISTIC_CONTEXT_TOKENS = (9_000, 25_000)
RATE_LIMIT_MESSAGE = "Too many chat input tokens per minute, try again later"
QUOTA_MESSAGE = (
    "Request failed. You've reached the max chat {kind} tokens allowed in organization {org}. "
    "To increase this quota, upgrade your plan."
)
ORGANIZATION = "citeq-emulator"


@dataclass(frozen=True)
class Plan:
    """A pricing plan's chat limits; None is unlimited."""

    name: str
    tokens_per_minute: int | None
    quota_input_tokens: int | None = None
    quota_output_tokens: int | None = None


PLANS = {
    plan.name: plan
    for plan in (
        Plan("starter", 100_000, 500_000, 300_000),
        Plan("builder", 200_000, 2_000_000, 1_000_000),
        Plan("standard", 300_000),
        Plan("enterprise", 1_000_000),
        Plan("none", None),
    )
}


def parse_context_tokens(value: Any) -> tuple[int, int] | None:
    """``"9000..25000"``, ``[9000, 25000]``, ``12000`` (fixed) or ``"measured"`` (only the retrieved text)."""
    if value is None or value == "measured":
        return None
    if isinstance(value, str):
        low, sep, high = value.partition("..")
        bounds = (int(low), int(high)) if sep else (int(value), int(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        bounds = (value, value)
    elif isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        bounds = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"context_tokens must be 'LOW..HIGH', N, [LOW, HIGH] or 'measured', not {value!r}")
    if not 0 <= bounds[0] <= bounds[1]:
        raise ValueError(f"context_tokens needs 0 <= LOW <= HIGH, not {bounds}")
    return bounds


def _limit(value: Any, name: str) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a positive integer, 0 or null (unlimited)")
    return value


@dataclass(frozen=True)
class PlanConfig:
    """The limits of one run: a plan by name, each limit overridable (0 or None: unlimited)."""

    plan: str = "none"
    tokens_per_minute: int | None = None
    quota_input_tokens: int | None = None
    quota_output_tokens: int | None = None
    context_tokens: tuple[int, int] | None = REALISTIC_CONTEXT_TOKENS
    # The service counts a minute; tests of pacing may shorten the window (the limit then applies per window).
    window_seconds: float = WINDOW_SECONDS

    @classmethod
    def of(
        cls,
        plan: str | None = "none",
        *,
        tokens_per_minute: int | None = None,
        quota_input_tokens: int | None = None,
        quota_output_tokens: int | None = None,
        context_tokens: Any = REALISTIC_CONTEXT_TOKENS,
    ) -> PlanConfig:
        """The named plan's limits, with any given limit (0: unlimited) in place of the plan's."""
        name = plan or "none"
        if name not in PLANS:
            raise ValueError(f"unknown plan {name!r}; one of {', '.join(PLANS)}")
        base = PLANS[name]
        return cls(
            name,
            base.tokens_per_minute if tokens_per_minute is None else _limit(tokens_per_minute, "tokens_per_minute"),
            base.quota_input_tokens if quota_input_tokens is None else _limit(quota_input_tokens, "quota_input_tokens"),
            base.quota_output_tokens
            if quota_output_tokens is None
            else _limit(quota_output_tokens, "quota_output_tokens"),
            parse_context_tokens(context_tokens),
        )

    def updated(self, values: Mapping[str, Any]) -> PlanConfig:
        """This config changed by admin JSON; naming ``plan`` starts from that plan's limits."""
        known = {
            "plan",
            "tokens_per_minute",
            "quota_input_tokens",
            "quota_output_tokens",
            "context_tokens",
            "window_seconds",
        }
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown plan settings: {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        if "window_seconds" in values:
            window = values["window_seconds"]
            if isinstance(window, bool) or not isinstance(window, int | float) or window <= 0:
                raise ValueError("window_seconds must be a positive number")
            changes["window_seconds"] = float(window)
        if "plan" in values:
            named = PlanConfig.of(
                values["plan"],
                tokens_per_minute=values.get("tokens_per_minute"),
                quota_input_tokens=values.get("quota_input_tokens"),
                quota_output_tokens=values.get("quota_output_tokens"),
                context_tokens=values.get("context_tokens", self.context_tokens),
            )
            return replace(named, **changes)
        for name in ("tokens_per_minute", "quota_input_tokens", "quota_output_tokens"):
            if name in values:
                changes[name] = _limit(values[name], name)
        if "context_tokens" in values:
            changes["context_tokens"] = parse_context_tokens(values["context_tokens"])
        return replace(self, **changes)

    def flags(self) -> list[str]:
        """The ``python -m infra.emulator`` flags that give this config."""

        def limit(value: int | None) -> str:
            return str(value or 0)

        low_high = self.context_tokens
        return [
            "--plan",
            self.plan,
            "--tokens-per-minute",
            limit(self.tokens_per_minute),
            "--quota-input-tokens",
            limit(self.quota_input_tokens),
            "--quota-output-tokens",
            limit(self.quota_output_tokens),
            "--context-tokens",
            f"{low_high[0]}..{low_high[1]}" if low_high else "measured",
        ]


@dataclass
class _Usage:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    rejected_429: int = 0
    rejected_403: int = 0


@dataclass
class PlanMeter:
    """The plan in force, the one-minute window and the quota totals of the whole emulator (one organization)."""

    config: PlanConfig = field(default_factory=PlanConfig)
    clock: Callable[[], float] = field(default=lambda: 0.0, repr=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._initial = self.config
        self._window: deque[tuple[float, int]] = deque()
        self._by_assistant: dict[str, _Usage] = {}
        self._total = _Usage()

    # ------------------------------------------------------------------ configuration
    def configure(self, config: PlanConfig) -> None:
        """Put ``config`` in force; usage so far is kept."""
        with self._lock:
            self.config = config

    def start_with(self, config: PlanConfig) -> None:
        """Put ``config`` in force as the config that ``reset`` returns to."""
        with self._lock:
            self.config = self._initial = config

    def reset(self) -> None:
        """Back to the config the emulator started with; empty window, zero totals."""
        with self._lock:
            self.config = self._initial
            self._window.clear()
            self._by_assistant.clear()
            self._total = _Usage()

    # ------------------------------------------------------------------ accounting
    def context_tokens(self, question: str, measured: int) -> int:
        """Prompt tokens of the injected context: a draw from the configured range that is the same every time
        for the same question, or ``measured`` (the retrieved text itself) when no range is configured."""
        bounds = self.config.context_tokens
        if bounds is None:
            return measured
        low, high = bounds
        digest = int.from_bytes(hashlib.sha256(question.strip().encode()).digest()[:8], "big")
        return low + digest % (high - low + 1)

    def _window_tokens(self, now: float) -> int:
        while self._window and self._window[0][0] <= now - self.config.window_seconds:
            self._window.popleft()
        return sum(tokens for _, tokens in self._window)

    def charge(self, assistant: str, input_tokens: int, output_tokens: int) -> None:
        """Admit one chat and charge its tokens, or raise the service's 403 (quota) or 429 (rate)."""
        with self._lock:
            config = self.config
            usage = self._by_assistant.setdefault(assistant, _Usage())
            now = self.clock()
            total = self._total
            if config.quota_input_tokens is not None and total.input_tokens + input_tokens > config.quota_input_tokens:
                self._reject(usage, 403)
                raise QuotaExceeded(QUOTA_MESSAGE.format(kind="input", org=ORGANIZATION))
            if config.quota_output_tokens is not None and total.output_tokens >= config.quota_output_tokens:
                self._reject(usage, 403)
                raise QuotaExceeded(QUOTA_MESSAGE.format(kind="output", org=ORGANIZATION))
            used = self._window_tokens(now)
            if config.tokens_per_minute is not None and used and used + input_tokens > config.tokens_per_minute:
                self._reject(usage, 429)
                raise TooManyRequests(RATE_LIMIT_MESSAGE)
            self._window.append((now, input_tokens))
            for counted in (usage, total):
                counted.requests += 1
                counted.input_tokens += input_tokens
                counted.output_tokens += output_tokens

    def _reject(self, usage: _Usage, status: int) -> None:
        for counted in (usage, self._total):
            if status == 429:
                counted.rejected_429 += 1
            else:
                counted.rejected_403 += 1

    def snapshot(self) -> dict[str, Any]:
        """The config, the window's tokens and the totals (overall and per assistant), for the admin endpoint."""
        with self._lock:
            config = asdict(self.config)
            if self.config.context_tokens is not None:
                config["context_tokens"] = list(self.config.context_tokens)
            return {
                **config,
                "window_tokens": self._window_tokens(self.clock()),
                "usage": asdict(self._total),
                "assistants": {name: asdict(u) for name, u in sorted(self._by_assistant.items())},
            }

    def admin(self, method: str, payload: Any) -> dict[str, Any]:
        """``/_emulator/plan``: GET reads, PUT replaces (from no limits), PATCH changes, DELETE resets."""
        if method in ("PUT", "PATCH"):
            if not isinstance(payload, dict):
                raise ValueError("plan settings must be a JSON object")
            base = PlanConfig() if method == "PUT" else self.config
            self.configure(base.updated(payload))
        elif method == "DELETE":
            self.reset()
        elif method != "GET":
            raise ValueError(f"method {method} not allowed on /_emulator/plan")
        return self.snapshot()
