"""Root of the project's exception tree."""


class RealcastError(Exception):
    """Base class for every error the box raises on purpose."""


class ConfigError(RealcastError):
    """A setting is unknown or has an invalid value; the message names the key."""


class StartupError(RealcastError):
    """The box cannot start, for example because a port is taken."""
