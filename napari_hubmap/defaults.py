"""Names the whole package agrees on, importable without torch or Qt."""

DEFAULT_MODEL = "hubmap-default"
"""The model shipped in ``models/`` (trained by the bundled trainer); ticked first in the Inference panel."""
