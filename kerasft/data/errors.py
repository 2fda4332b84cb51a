"""The errors and warnings of the data loaders, and how their messages list offending items."""

# How many offending rows/files an error or warning names.
SHOWN = 5


class DataError(ValueError):
    """Raised when a data source cannot make a task: says what, expected and received."""


class DataWarning(UserWarning):
    """Warns about examples that were skipped or classes missing from a split."""


def first_items(items, limit=SHOWN):
    """Formats the first few items of a list for a message."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
