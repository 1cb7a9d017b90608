"""Integrations with other packages, each needing an optional extra."""
