"""Roles that panels play for each other, so that a panel finds its siblings without importing them.

A panel that serves others inherits a role (a plain mixin, beside ``QWidget``); a panel that needs one
asks :func:`docked` for the docked widgets playing it. The Training panel, for instance, refreshes every
:class:`ListsModels` when a model is done and starts from the project of a :class:`HoldsProject`.
"""

from __future__ import annotations


class ListsModels:
    """Shows the model registry (the Inference panel)."""

    def refresh_models(self) -> None:
        """Re-read the registry (a model was added)."""
        raise NotImplementedError


class HoldsProject:
    """Has a curation project open (the Review panel)."""

    def project_root(self) -> str | None:
        """The open project's folder, or None."""
        raise NotImplementedError


def docked(viewer, role: type) -> list:
    """The widgets docked in ``viewer``'s window that play ``role`` (none without a window)."""
    try:
        widgets = list(viewer.window.dock_widgets.values())
    except (AttributeError, RuntimeError):  # no window (headless viewer) or already closed
        return []
    return [widget for widget in widgets if isinstance(widget, role)]
