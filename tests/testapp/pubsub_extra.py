"""Found only when PGPUBSUB['AUTODISCOVER_MODULES'] names it."""

from __future__ import annotations

from django_pgpubsub import Event, handler


@handler("test.extra")
def extra(event: Event) -> None:
    """Does nothing; its registration is what the test checks."""
