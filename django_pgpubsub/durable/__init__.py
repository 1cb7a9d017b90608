"""Durable events: the outbox's claims, attempts and the sweeper that runs them."""
