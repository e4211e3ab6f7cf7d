"""Names the whole package agrees on, importable without torch or Qt."""

DEFAULT_MODEL = "hubmap-default"
"""The model shipped in ``models/`` (trained by the bundled trainer); ticked first in the Inference panel."""

DEFAULT_MPP = 0.5
"""µm per pixel assumed for a slide or data folder that carries none (PNG, JPEG, bare TIFF): HuBMAP
slides and 20x scans are about 0.5. The one assumption of the package; every command and panel says
when it is made (see :mod:`napari_hubmap.slide.scale`)."""

DEFAULT_SAMPLE = "hubmap-pas"
"""The sample ``napari-hubmap view`` opens without slides: the real HuBMAP PAS tile (see
:mod:`napari_hubmap.sample_data`)."""

DEVICES = ("auto", "cpu", "cuda", "mps")
"""The devices inference and training run on, as the command line and the panels offer them: ``auto`` picks a
CUDA GPU, else Apple's MPS, else the CPU. Both also take any torch device string, such as ``cuda:1``."""
