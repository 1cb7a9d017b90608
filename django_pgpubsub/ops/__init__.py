"""Operations: health checks, Prometheus metrics, and the bounded reads both make.

Internal: import the public names from ``django_pgpubsub``.
"""
