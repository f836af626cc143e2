"""Domain errors, raised where a problem is understood.

They carry no transport details: the gRPC boundary (``driftline.server.status``) maps each class
to a status code, and the CLI prints the message. Messages are written for the person who has to
fix the problem: they say what was wrong and what was expected.
"""


class DriftlineError(Exception):
    """Base class of every error driftline raises on purpose."""


class NotFound(DriftlineError):
    """A model, version or file that does not exist."""


class InvalidInput(DriftlineError):
    """A request or argument that can never succeed as sent."""


class Unavailable(DriftlineError):
    """Exists, but cannot serve right now (failed to load, unloaded, shutting down)."""


class CorruptArtifact(DriftlineError):
    """A stored version whose files do not match its manifest, or cannot be read."""


class PublishError(DriftlineError):
    """A version could not be published, or an alias moved; the registry is left as it was."""


class DiskFull(PublishError):
    """A registry write ran out of space (or quota); it was undone, so the registry is left as it was."""


class DeadlineExpired(DriftlineError):
    """The caller's deadline passed before the work could start."""


class Unsupported(DriftlineError):
    """The request is valid, but this model or version cannot do it (e.g. no training profile)."""


class Incompatible(DriftlineError):
    """A version that cannot replace the serving one without breaking its callers."""


class NotANumber(InvalidInput):
    """Text where a number belongs; carries the feature so validation counters can count it."""

    def __init__(self, message: str, feature: str) -> None:
        super().__init__(message)
        self.feature = feature
