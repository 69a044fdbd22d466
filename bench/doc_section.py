"""One bench script's own section of a Markdown page (docs/efficiency.md), between its begin/end markers."""

from pathlib import Path


def write_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replace the part of `path` from `begin` to `end` with `section` (which carries both), or append it."""
    text = path.read_text() if path.is_file() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
