"""Benchmarks: django_pgpubsub against a raw psycopg2 loop, in the same run."""
