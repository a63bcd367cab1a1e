"""napari widgets of napari-drunet (Qt). Importing this package loads nothing heavy.

* :class:`~napari_drunet.gui.segment.SegmentWidget` -- run a model on image layers;
* :class:`~napari_drunet.gui.corrections.CorrectionsWidget` -- correction project, autosave;
* :class:`~napari_drunet.gui.finetune.FinetuneWidget` -- background fine-tuning, promotion;
* :class:`~napari_drunet.gui.versions.VersionsWidget` -- model versions, one-click revert;
* :func:`~napari_drunet.gui.demo.launch_demo` -- napari with a sample segmented and docked widgets.
"""
