"""The error raised when an execution backend cannot run where it was asked to."""


class BackendUnavailable(RuntimeError):
    """A backend cannot run on this machine or device; the message says why and what to use."""
