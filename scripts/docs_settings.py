"""Render the docs' Settings page from the declarations in ``django_pgpubsub.conf``.

``python scripts/docs_settings.py`` prints it; ``--write`` writes it to
docs/settings.rst. ``tests/conf/test_conf.py`` fails while the two differ.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "settings.rst"
# Section titles that the declarations' help mentions, as `Title`_, and the
# Sphinx reference of that section's page or label.
REFERENCES = {
    "Scaling writers and listeners": ":doc:`scaling`",
    "How durable events are handled": ":ref:`durable-handling`",
    "Tracing": ":doc:`tracing`",
}
TITLE_REFERENCE = re.compile(r"`([^`<>]+)`_")


def cross_reference(text: str) -> str:
    """``text`` with its `Title`_ references as Sphinx references to other pages."""

    def replace(match: re.Match[str]) -> str:
        title = " ".join(match.group(1).split())
        if title not in REFERENCES:
            raise SystemExit(f"scripts/docs_settings.py: add {title!r} to REFERENCES.")
        return REFERENCES[title]

    return TITLE_REFERENCE.sub(replace, text)


def render() -> str:
    """The Settings page, as docs/settings.rst must hold it."""
    from django_pgpubsub.conf import DECLARED  # noqa: PLC0415 - needs configured settings

    lines = [
        "Settings",
        "========",
        "",
        "All optional, in a ``PGPUBSUB`` dict in your settings:",
        "",
        ".. code-block:: python",
        "",
        "    PGPUBSUB = {",
    ]
    for setting in DECLARED.values():
        default = list(setting.default) if isinstance(setting.default, tuple) else setting.default
        lines.append(f"        {setting.name!r}: {default!r},".replace("'", '"'))
    lines += ["    }", ""]
    for setting in DECLARED.values():
        lines.append(f"``{setting.name}`` (default {setting.default_text}; {setting.kind})")
        lines += textwrap.wrap(
            cross_reference(setting.help),
            78,
            initial_indent="    ",
            subsequent_indent="    ",
            break_on_hyphens=False,
        )
    lines += [
        "",
        "Settings are read when used, so ``override_settings`` works. A value of",
        "the wrong type or out of bounds (``inf``, ``NaN`` and ``True`` are not",
        "numbers here) is refused by the system check ``django_pgpubsub.E002``.",
        "",
    ]
    return "\n".join(lines)


def current() -> str:
    """The Settings page as docs/settings.rst holds it now."""
    return PAGE.read_text() if PAGE.exists() else ""


def main(argv: list[str]) -> int:
    import django  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    if argv == ["--write"]:
        PAGE.write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
