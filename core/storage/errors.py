"""Storage failures the rest of the program can name without importing a driver."""


class StoreUnavailableError(Exception):
    """The database cannot be opened or reached. The message says which and why (never a password)."""
