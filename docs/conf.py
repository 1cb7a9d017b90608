"""Sphinx configuration: the docs site, built by ``make docs`` (warnings are errors)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the package, which needs configured settings; the test
# settings only read DATABASE_URL and start no database.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

project = "django_pgpubsub"
author = "the django_pgpubsub authors"
copyright = "2026, the django_pgpubsub authors"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = "django_pgpubsub"
