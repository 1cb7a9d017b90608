"""Every ``>>>`` example of the docs pages (and README.rst) runs, against the real test database."""

from __future__ import annotations

import doctest

import pytest

from tests.helpers import ROOT

# Each page runs with globals of its own, so each imports what it uses.
PAGES = [*sorted((ROOT / "docs").glob("*.rst")), ROOT / "README.rst"]


@pytest.mark.django_db(transaction=True)
def test_docs_examples() -> None:
    attempted = failed = 0
    for page in PAGES:
        result = doctest.testfile(
            str(page),
            module_relative=False,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        )
        attempted += result.attempted
        failed += result.failed
    assert attempted > 40, attempted
    assert failed == 0, "see the doctest report above"
