"""Every ``>>>`` example of the docs pages (and README.rst) runs, against the real test database."""

from __future__ import annotations

import configparser
import doctest
import re

import pytest

from tests.helpers import ROOT, project_files

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


# Our docs site, named for the distribution (django-pg-pubsub, .readthedocs.yaml).
OUR_DOCS = "https://django-pg-pubsub.readthedocs.io/"
# The site of another library, PaulGilmartin/django-pgpubsub (split, so that
# this file does not contain it).
OTHER_LIBRARYS_DOCS = "django-pgpubsub" + ".readthedocs"


def test_no_file_links_to_the_docs_of_another_library() -> None:
    files = project_files()
    assert ROOT / "README.rst" in files
    assert ROOT / "setup.cfg" in files
    linking = [
        str(path.relative_to(ROOT))
        for path in files
        if OTHER_LIBRARYS_DOCS in path.read_bytes().decode("utf-8", "replace")
    ]
    assert linking == []


def test_the_readme_and_the_package_metadata_link_to_our_docs() -> None:
    readme = (ROOT / "README.rst").read_text()
    links = re.findall(r"https://[\w.-]+\.readthedocs\.io/\S*", readme)
    assert len(links) > 10, links
    ours = [link for link in links if link.startswith(OUR_DOCS)]
    # Only our docs, and the projects the README names as dependencies.
    assert ours == [link for link in links if "pg-pubsub" in link or "pgpubsub" in link]
    assert ours, links
    for link in ours:
        page = link.removeprefix(OUR_DOCS)
        if page:
            match = re.fullmatch(r"en/latest/(\w+)\.html", page)
            assert match, link
            assert (ROOT / "docs" / f"{match[1]}.rst").is_file(), link
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["url"] == OUR_DOCS
    project_urls = dict(
        line.split(" = ", 1) for line in metadata["metadata"]["project_urls"].strip().splitlines()
    )
    assert project_urls == {
        "Documentation": OUR_DOCS,
        "Source": "https://github.com/django-pgpubsub/django_pgpubsub",
        "Changelog": f"{OUR_DOCS}en/latest/changelog.html",
    }
    assert (ROOT / "docs" / "changelog.rst").is_file()
