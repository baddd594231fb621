"""One exception tree for the platform.

Every message says what went wrong *and what to do about it*; the UI turns these into
``gr.Error`` at its edge and the CLI prints them as one line, so no user ever sees a traceback
for a problem they can fix.
"""

from __future__ import annotations


class XAIError(Exception):
    """Base class: a problem the user can act on."""

    #: what the UI's error pop-up is titled: what happened, in a few words
    title = "Cannot do that"


class ConfigError(XAIError):
    """A model or app configuration entry is invalid.

    The message names the file, the key and the fix.
    """

    title = "Configuration problem"

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 fix: str | None = None) -> None:
        parts = []
        if source:
            parts.append(str(source))
        if key:
            parts.append(f"key '{key}'")
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        if fix:
            text = f"{text} Fix: {fix}"
        super().__init__(text)
        self.source = source
        self.key = key
        self.fix = fix


class ModelUnavailableError(XAIError):
    """The model cannot be loaded (missing weights, missing framework, unreadable file)."""

    title = "Model not available"


class InputError(XAIError):
    """A user input is empty, corrupt, unsupported, too large or too long."""

    title = "Input not usable"


class ExplainerError(XAIError):
    """A method cannot run on this model or with these parameters."""

    title = "Method cannot run"


class CancelledError(XAIError):
    """The user cancelled a running request."""

    title = "Cancelled"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error passes on from a library's multi-line text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
