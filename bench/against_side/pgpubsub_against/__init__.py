"""The handlers ``python -m bench.against`` runs on both sides of a comparison.

Not part of either tree: this folder goes on ``PYTHONPATH`` after the tree
being measured, so REF (which may have neither ``bench/models.py`` nor a
writing handler) and this tree run the same handlers, the same ORM write and
the same measurement, each with its own library and its own ``bench`` app.
"""
