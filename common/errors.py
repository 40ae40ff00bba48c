"""The one exception type that means "the user asked for something we can't do"."""


class ConfigError(ValueError):
    """Bad input: the message is one line naming the key, the value and the fix.

    The entry points print it without a traceback and exit non-zero.
    """
