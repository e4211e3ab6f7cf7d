"""The stores on disk, in one place: what they are called and how they are written and read.

* :mod:`.naming`: the slide-stem rule and the names of the probability and labels stores;
* :mod:`.probability`: the probability map (uint8 OME-Zarr, written by rows, resumable);
* :mod:`.labels`: instance labels (uint32 OME-Zarr, written block by block);
* :mod:`.ngff`: what the two share (NGFF 0.4 multiscale attrs, the checked open).

Imports neither torch, Qt nor napari: post-processing, export and the readers use it without the
inference engine. Import from the modules (this package imports nothing, so names stay cheap).
"""
