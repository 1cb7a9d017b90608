"""Every ``>>>`` example in README.rst runs, against the real test database."""

from __future__ import annotations

import doctest

import pytest

from tests.helpers import ROOT


@pytest.mark.django_db(transaction=True)
def test_readme_examples() -> None:
    result = doctest.testfile(
        str(ROOT / "README.rst"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 40, result
    assert result.failed == 0, "see the doctest report above"
