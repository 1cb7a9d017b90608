"""The long-running loop of ``listen_events``: dispatch, liveness, schedule, shutdown.

Internal but for ``loop.Listener`` and ``shutdown.stop_on_signals`` (see docs/handlers.rst).
"""
