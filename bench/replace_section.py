"""Replaces one "## " section of a Markdown page, keeping the others."""


def replace_section(path, heading, section):
    """Writes `section` (starting with `heading`) into the page at `path`,
    in place of the section with that heading, or at the end."""
    text = open(path).read()
    start = text.find("\n" + heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + (text[end:] if end >= 0 else "")
    open(path, "w").write(text)
