"""napari-hubmap: glomerulus segmentation of gigapixel kidney slides.

The core (everything here except ``_widgets``) imports neither Qt nor napari.
"""

__version__ = "0.1.0"
