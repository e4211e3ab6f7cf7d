"""napari widgets (Qt). Importing them installs the triton guard (see :mod:`.triton_guard`)."""

from .triton_guard import install_triton_guard

install_triton_guard()
