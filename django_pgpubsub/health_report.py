"""What the health checks found: one :class:`CheckResult` per check, in a
:class:`HealthReport`, and the verdicts that turn a measure into a result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        ok: Whether it passed.
        value: What was measured (JSON-serialisable).
        detail: What was measured and against what limit, in words.
        warning: Passed, but ``detail`` says what deserves a look.
    """

    ok: bool
    value: Any
    detail: str
    warning: bool = False


@dataclass(frozen=True)
class HealthReport:
    """Every check's result, by name, in the order they ran."""

    checks: dict[str, CheckResult] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """True when every check passed."""
        return all(check.ok for check in self.checks.values())

    def failures(self) -> list[str]:
        """One line per failed check: ``name: detail``."""
        return [f"{name}: {check.detail}" for name, check in self.checks.items() if not check.ok]

    def warnings(self) -> list[str]:
        """One line per passed check with a warning: ``warning: name: detail``."""
        return [
            f"warning: {name}: {check.detail}"
            for name, check in self.checks.items()
            if check.ok and check.warning
        ]

    def as_dict(self) -> dict[str, Any]:
        """``{"healthy": bool, "checks": {name: {"ok", "value", "detail"}}}``."""
        return {
            "healthy": self.healthy,
            "checks": {
                name: {"ok": check.ok, "value": check.value, "detail": check.detail}
                for name, check in self.checks.items()
            },
        }


def queue_usage_check(usage: float, limit: float) -> CheckResult:
    text = f"notification queue {usage:.2%} full"
    if usage > limit:
        return CheckResult(False, usage, f"{text}, above the limit of {limit:.2%}")
    return CheckResult(True, usage, f"{text} (limit {limit:.2%})")


def failed_events_check(failed: int, limit: int) -> CheckResult:
    if failed > limit:
        return CheckResult(
            False,
            failed,
            f"{failed} failed durable event(s), {failed - limit} more than the {limit} "
            "allowed; see `manage.py durable_events`",
        )
    return CheckResult(True, failed, f"{failed} failed durable event(s) (limit {limit})")


def oldest_pending_check(age: float | None, limit: float) -> CheckResult:
    if age is None:
        return CheckResult(True, None, "no pending durable event")
    if age > limit:
        return CheckResult(
            False,
            age,
            f"the oldest pending durable event is {age:.0f} s old, {age - limit:.0f} s "
            f"over the limit of {limit:g} s",
        )
    return CheckResult(True, age, f"the oldest pending durable event is {age:.0f} s old")


def unhandled_channels_check(channels: list[str], require_listener: bool) -> CheckResult:
    if not channels:
        return CheckResult(True, [], "every channel with pending durable events has a listener")
    detail = (
        f"pending durable events on channel(s) {channels} that no running listen_events "
        "handles: they wait until one does"
    )
    return CheckResult(not require_listener, channels, detail, warning=True)


def blocked_keys_check(keys: int, oldest: float | None, limit: float | None) -> CheckResult:
    """Ordering keys held back by a failed attempt: a warning, or a failure once
    the oldest event waiting behind one is older than ``limit`` seconds."""
    value = {"keys": keys, "oldest_seconds": oldest}
    if not keys or oldest is None:
        return CheckResult(True, value, "no ordering key is blocked by a failed attempt")
    detail = (
        f"{keys} ordering key(s) blocked by a failed attempt; the oldest event held back "
        f"waits for {oldest:.0f} s"
    )
    if limit is not None and oldest > limit:
        return CheckResult(False, value, f"{detail}, over the limit of {limit:g} s")
    return CheckResult(True, value, f"{detail}; see `manage.py durable_events`", warning=True)
