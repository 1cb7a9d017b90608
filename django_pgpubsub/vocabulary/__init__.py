"""What the subpackages share: events, payloads, channel names, handlers, the observer.

Internal: import the public names from ``django_pgpubsub``.
"""
