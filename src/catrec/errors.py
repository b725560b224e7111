"""The one exception type the CLI turns into a clean one-line error (no traceback)."""


class CatrecError(Exception):
    """A user-facing error: bad input, bad config, failed download. Names the key, file or line."""
