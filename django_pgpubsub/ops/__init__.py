"""Operations: health checks, Prometheus metrics, and the bounded reads both make.

``ops.health`` and ``ops.metrics`` are public (docs/api.rst); ``ops.reads`` is internal.
"""
