"""The long-running loop of ``listen_events``: dispatch, liveness, schedule, shutdown.

Internal: import the public names from ``django_pgpubsub``.
"""
