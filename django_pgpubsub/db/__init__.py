"""Connections, sync and async, on both drivers; the SQL of sending and of the outbox; backoff.

Internal: import the public names from ``django_pgpubsub``.
"""
