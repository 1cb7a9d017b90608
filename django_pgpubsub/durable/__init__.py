"""Durable events, the listener's side: the outbox's sweep, claims, group commit and attempts.

Internal: import the public names from ``django_pgpubsub``.
"""
