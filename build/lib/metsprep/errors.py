"""Exceptions that carry a reason a person understands into the catalog."""


class CaseExcluded(Exception):
    """Raised inside a stage when a case cannot be processed; the message is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
