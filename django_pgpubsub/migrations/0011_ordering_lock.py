"""Ordering keys in id order: a writer of a keyed event waits for the key's
earlier writers to commit.

Before storing a keyed row, ``django_pgpubsub_outbox_stored`` takes a
transaction-level advisory lock on its key and only then numbers the row, so
a key's events are numbered in the order their transactions commit, and no
event can commit behind a later one of its key that a listener already ran.
"""

from __future__ import annotations

import importlib

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION django_pgpubsub_outbox_stored() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885827187, hashtext(NEW.ordering_key));
    NEW.id := nextval(pg_get_serial_sequence('django_pgpubsub_outbox', 'id'));
    NEW.behind := EXISTS (
        SELECT 1 FROM django_pgpubsub_outbox
        WHERE ordering_key = NEW.ordering_key
            AND (ordering_key, id) < (NEW.ordering_key, NEW.id)
            AND state IN ('pending', 'running')
    );
    RETURN NEW;
END
$$;
"""

DROP = """
CREATE OR REPLACE FUNCTION django_pgpubsub_outbox_stored() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off AS $$
BEGIN
    NEW.behind := EXISTS (
        SELECT 1 FROM django_pgpubsub_outbox
        WHERE ordering_key = NEW.ordering_key
            AND (ordering_key, id) < (NEW.ordering_key, NEW.id)
            AND state IN ('pending', 'running')
    );
    RETURN NEW;
END
$$;
"""

on_postgresql = importlib.import_module(
    "django_pgpubsub.migrations.0004_complete_function"
).on_postgresql


class Migration(migrations.Migration):
    dependencies = [
        ("django_pgpubsub", "0010_behind"),
    ]

    operations = [migrations.RunPython(on_postgresql(CREATE), on_postgresql(DROP))]
