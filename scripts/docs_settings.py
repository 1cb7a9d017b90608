"""Render README.rst's Settings section from the declarations in ``django_pgpubsub.conf``.

``python scripts/readme_settings.py`` prints it; ``--write`` replaces the
section in README.rst. ``tests/test_conf.py`` fails while the two differ.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.rst"
# From the section's title up to the next section's.
SECTION = re.compile(r"^Settings\n========\n.*?(?=\n\n\n[^\n]+\n=+\n)", re.S | re.M)


def render() -> str:
    """The Settings section, as README.rst must hold it."""
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
            setting.help,
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
    ]
    return "\n".join(lines)


def current() -> str:
    """The Settings section as README.rst holds it now."""
    match = SECTION.search(README.read_text())
    if match is None:
        raise SystemExit("README.rst has no Settings section followed by another.")
    return match.group(0)


def main(argv: list[str]) -> int:
    import django  # noqa: PLC0415

    sys.path.insert(0, str(README.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    if argv == ["--write"]:
        text = README.read_text()
        README.write_text(text.replace(current(), render()))
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
