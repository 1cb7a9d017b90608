"""The Channels layer's parts.

Internal: its public path is ``django_pgpubsub.layers``.
"""
