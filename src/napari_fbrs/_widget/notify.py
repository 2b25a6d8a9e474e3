"""User notifications of the dock widget (napari's notification area) and the wording
of error messages.

The widget's modules call these through the module (``notify.error(...)``), so that tests
can catch them with ``monkeypatch.setattr(notify, "error", ...)``.
"""

from __future__ import annotations

__all__ = ["error", "error_message", "info", "is_out_of_memory", "warning"]


def error(message: str) -> None:
    """Show ``message`` as a napari error notification."""
    from napari.utils.notifications import show_error

    show_error(message)


def warning(message: str) -> None:
    """Show ``message`` as a napari warning notification."""
    from napari.utils.notifications import show_warning

    show_warning(message)


def info(message: str) -> None:
    """Show ``message`` as a napari information notification."""
    from napari.utils.notifications import show_info

    show_info(message)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (Python, numpy or torch, CPU or GPU)."""
    if isinstance(exc, MemoryError):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"OutOfMemoryError", "_ArrayMemoryError"}:
        return True
    text = str(exc).lower()
    return "out of memory" in text or "unable to allocate" in text


def error_message(exc: BaseException) -> str:
    """One line for a notification: the error, and for out-of-memory what to do."""
    message = str(exc) or type(exc).__name__
    if is_out_of_memory(exc):
        message += (
            ". Out of memory: set a longest side limit ('Longest side') or lower it, use "
            "a smaller model or the CPU, or crop the image."
        )
    return message
