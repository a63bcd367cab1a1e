"""The engine: image I/O, networks, inference, models, training, correction projects.

No Qt, napari or magicgui here (``tests/core/test_layering.py``); the layout is drawn in
``docs/architecture.md``.
"""

from .deprecated import install

install()
