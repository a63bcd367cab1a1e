"""Engine of napari-drunet: no Qt, napari or magicgui imports anywhere below this package."""
