"""Publishing: ``notify()``, the low-level ``PubSub`` API, and model events.

Internal: import the public names from ``django_pgpubsub``.
"""
