"""Settings, each declared once (name, kind, default, help) and read lazily from
``settings.PGPUBSUB``. Internal: docs/settings.rst, rendered from them, documents the settings.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from django_pgpubsub.conf.kinds import (
    CACHE,
    DECLARED,
    Alias,
    Choice,
    Count,
    Flag,
    Limit,
    ModuleNames,
    Seconds,
    SecondsOrNone,
    Setting,
    configured,
)

# The kinds, for declarations elsewhere and for tests.
__all__ = [
    "DECLARED",
    "Alias",
    "Choice",
    "Count",
    "Flag",
    "Limit",
    "ModuleNames",
    "Seconds",
    "SecondsOrNone",
    "Setting",
]

database_setting = Alias(
    "DATABASE",
    "default",
    "The alias ``notify()``, ``notify_many()`` and ``connect()`` use when "
    "``using`` is not given; also where the outbox of durable events is.",
    cached=True,
)
listener_database_setting = Alias(
    "LISTENER_DATABASE",
    None,
    "The alias ``listen_events`` listens on. Point it at a direct connection "
    "when ``DATABASE`` goes through PgBouncer in transaction pooling mode.",
    none_means="the ``DATABASE`` setting",
)
autodiscover_modules = ModuleNames(
    "AUTODISCOVER_MODULES",
    ("pubsub",),
    "Modules imported from every installed app at start-up.",
)
keepalive_interval = Seconds(
    "KEEPALIVE_INTERVAL",
    5.0,
    "Idle time after which the listener probes its connection with a "
    "notification to itself (it must come back within half this time); also "
    "its TCP keepalive interval. At most 32767: Linux refuses a longer "
    "``TCP_KEEPIDLE``, and no listening connection would open.",
    at_most=32767,
)
reconnect_initial_delay = Seconds(
    "RECONNECT_INITIAL_DELAY",
    0.25,
    "Delay before the second connection attempt; it doubles each time.",
)
reconnect_max_delay = Seconds(
    "RECONNECT_MAX_DELAY",
    30.0,
    "Cap of that delay. Each wait is jittered between half and all of it.",
)
reconnect_max_attempts = Limit(
    "RECONNECT_MAX_ATTEMPTS",
    None,
    "Failed attempts after which the listener gives up and raises "
    "``ConnectionLost`` (``listen_events`` then exits non-zero).",
)
durable_poll_interval = Seconds(
    "DURABLE_POLL_INTERVAL",
    5.0,
    "How often an idle listener looks for due durable events (retries, or "
    "events whose wake-up it missed).",
)
durable_batch_size = Count(
    "DURABLE_BATCH_SIZE",
    100,
    "Durable events a listener claims at a time. It holds the ones waiting for "
    "their turn (renewing their leases) until it has handled all of the claim: "
    "lower this for slow handlers, so that other listeners share the work.",
)
durable_max_attempts = Count(
    "DURABLE_MAX_ATTEMPTS",
    5,
    "Attempts after which a durable event stays ``failed``.",
)
durable_retry_delay = Seconds(
    "DURABLE_RETRY_DELAY",
    2.0,
    "Delay before the first retry of a failed durable event; it doubles.",
)
durable_retry_max_delay = Seconds(
    "DURABLE_RETRY_MAX_DELAY",
    600.0,
    "Cap of that delay.",
)
durable_wakeup = Choice(
    "DURABLE_WAKEUP",
    "notify",
    'How listeners learn of new durable events. ``"notify"``: each transaction '
    "that stores some sends one NOTIFY per channel, and listeners claim at once. "
    '``"poll"``: writers only insert rows (no NOTIFY, so no commit-time lock), '
    "and listeners probe the outbox every ``DURABLE_PROBE_INTERVAL``. Set it alike "
    "for writers and listeners (see `Scaling writers and listeners`_).",
    cached=True,
    choices=("notify", "poll"),
)
durable_probe_interval = Seconds(
    "DURABLE_PROBE_INTERVAL",
    0.5,
    'With ``DURABLE_WAKEUP = "poll"``, how often a listener probes the outbox '
    "for due events of its channels (an index-only query).",
)
durable_lease = Seconds(
    "DURABLE_LEASE",
    60.0,
    "How long a listener may run one durable event's handlers before another "
    "listener takes the event back (see `How durable events are handled`_). "
    "Claims of a listener whose database session is gone come back sooner, at "
    "the next sweep.",
)
ordering_on_dead_letter = Choice(
    "ORDERING_ON_DEAD_LETTER",
    "continue",
    "What a durable event with an ``ordering_key`` does to its key once it "
    'failed its last attempt. ``"continue"``: the key\'s next events run (the '
    'failed one stays ``failed``). ``"block"``: they wait until an operator '
    "retries the failed event (``durable_events retry``) or deletes it "
    "(``durable_events purge``). Set it alike for every listener.",
    choices=("continue", "block"),
)


def ordering_blocking_states() -> list[str]:
    """The states of an earlier event of its key that keep a keyed event waiting."""
    if ordering_on_dead_letter() == "block":
        return ["pending", "running", "failed"]
    return ["pending", "running"]


def ordering_blocker_states() -> list[str]:
    """The states of a keyed event with a failed attempt that hold its key back."""
    return ["pending", "failed"] if ordering_on_dead_letter() == "block" else ["pending"]


sse_keepalive = Seconds(
    "SSE_KEEPALIVE",
    15.0,
    "Seconds without an event after which ``EventStreamView`` sends a comment "
    "line, so proxies and browsers keep an idle stream open.",
)
sse_max_age = SecondsOrNone(
    "SSE_MAX_AGE",
    None,
    "Longest life of one ``EventStreamView`` stream, in seconds. The stream "
    "then ends; the browser's ``EventSource`` reconnects by itself, the new "
    "request is authorized afresh (a user who logged out is refused), and it "
    "starts with a ``pgpubsub.resync`` event. A view's ``max_age`` attribute "
    "overrides it.",
)
subscriber_queue_size = Count(
    "SUBSCRIBER_QUEUE_SIZE",
    1000,
    "Events the hub keeps for one subscriber (e.g. one ``EventStreamView`` "
    "client) that reads slower than they come. When it is full, the queued "
    "events are dropped for one ``pgpubsub.resync`` event, and the events "
    "that follow are queued after it.",
)
trace_plain_events = Flag(
    "TRACE_PLAIN_EVENTS",
    False,
    "While tracing is on, put the sender's trace context in front of each plain "
    "event's payload, where ``listen_events`` (and eager mode) takes it off "
    "again: its handlers see the payload as sent, in the sender's trace. Every "
    "other receiver of those channels (``connect()``, ``subscribe()``, "
    "``EventStreamView``, other programs) sees the context too: turn it on "
    "when only ``listen_events`` reads your plain events (see `Tracing`_).",
    cached=True,
)


def database() -> str:
    """The alias ``notify()`` and ``connect()`` use by default (cached)."""
    try:
        return str(CACHE["DATABASE"])
    except KeyError:
        return str(database_setting())


def listener_database() -> str:
    """The alias ``listen_events`` connects to: ``LISTENER_DATABASE`` or ``DATABASE``."""
    return listener_database_setting() or database()


def debug() -> bool:
    """``settings.DEBUG`` (cached, as above): whether Django logs queries."""
    try:
        return bool(CACHE["DEBUG"])
    except KeyError:
        value = CACHE["DEBUG"] = bool(settings.DEBUG)
        return value


def problems() -> list[str]:
    """Every mistake in ``settings.PGPUBSUB``, one message each (for E002)."""
    try:
        values = configured()
    except ImproperlyConfigured as exc:
        return [str(exc)]
    found = []
    unknown = set(values) - set(DECLARED)
    if unknown:
        found.append(
            f"Unknown PGPUBSUB setting(s) {sorted(unknown)}; the settings are {sorted(DECLARED)}."
        )
    for declaration in DECLARED.values():
        if declaration.name in values:
            try:
                declaration.validate(values[declaration.name])
            except ImproperlyConfigured as exc:
                found.append(str(exc))
    return found
