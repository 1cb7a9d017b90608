"""The Channels layer's parts (its path is ``django_pgpubsub.layers``).

Internal: import the public names from ``django_pgpubsub``.
"""
