"""Errors that the user caused or can fix; the CLI prints them without a trace."""


class AcepilotError(Exception):
    """Base class: the message is shown to the user as it is."""


class ModelSourceError(AcepilotError):
    """A checkpoint could not be found, downloaded or read."""


class RegistryError(AcepilotError):
    """A registry entry is missing, corrupt or does not match its manifest."""


class BuildError(AcepilotError):
    """A model build failed (conversion or parity gate); nothing was registered."""
