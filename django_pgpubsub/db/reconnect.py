"""Backoff: retry delays for durable events, and the reconnect policy shared
by the listener and the hub."""

from __future__ import annotations

import logging
import random

from django_pgpubsub import conf
from django_pgpubsub.exceptions import ConnectionLost

# 2.0 ** 1024 overflows a float; any exponent past this one is at the cap.
_MAX_EXPONENT = 60
# No delay is longer (ten years): PostgreSQL intervals and timestamps overflow
# somewhere past that, whatever the settings say.
MAX_DELAY = 10 * 365 * 24 * 3600.0


def backoff(initial: float, cap: float, failures: int) -> float:
    """``initial`` doubled for each failure after the first, at most ``cap``.

    Never overflows, for any number of failures or any cap.
    """
    exponent = min(max(failures - 1, 0), _MAX_EXPONENT)
    return min(cap, initial * 2.0**exponent, MAX_DELAY)


def _reconnect_delay(failures: int) -> float | None:
    """Seconds to wait before connecting again after ``failures`` failed attempts.

    The ``RECONNECT_INITIAL_DELAY`` doubled per failure up to
    ``RECONNECT_MAX_DELAY``, then jittered down to half of it so that the
    processes of a fleet do not reconnect in step.

    Returns:
        The delay, or ``None`` once ``RECONNECT_MAX_ATTEMPTS`` attempts failed.
    """
    max_attempts = conf.reconnect_max_attempts()
    if max_attempts is not None and failures >= max_attempts:
        return None
    delay = backoff(conf.reconnect_initial_delay(), conf.reconnect_max_delay(), failures)
    return random.uniform(delay / 2, delay)


class Reconnection:
    """One outage of a listening connection: counts failed connection attempts.

    The listener and the hub each make one per outage and call :meth:`failed`
    after each attempt that raised, then sleep for the delay it returns (the
    one sync, the other async).

    Args:
        who: How the log names the connection's owner ("Listener", "Hub").
        using: The DATABASES alias.
        logger: Where the retries are logged.
    """

    def __init__(self, who: str, using: str, logger: logging.Logger) -> None:
        self.who = who
        self.using = using
        self.logger = logger
        self.failures = 0

    def failed(self, error: ConnectionLost) -> float:
        """Count a failed attempt; return the seconds to wait before the next one.

        Raises:
            ConnectionLost: ``error`` itself, once ``RECONNECT_MAX_ATTEMPTS``
                attempts have failed.
        """
        self.failures += 1
        delay = _reconnect_delay(self.failures)
        if delay is None:
            raise error
        self.logger.warning(
            "%s cannot connect to %r (%s); attempt %d, retrying in %.2f s.",
            self.who,
            self.using,
            str(error).strip().splitlines()[0],
            self.failures,
            delay,
        )
        return delay
