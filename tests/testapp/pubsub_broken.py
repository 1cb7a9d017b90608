"""A handler module with a bug: autodiscovery must not swallow its error."""

from __future__ import annotations

raise RuntimeError("bug in pubsub_broken")
