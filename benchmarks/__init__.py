"""Benchmarks and packaging scripts of napari-drunet (not installed with the package).

Run each from the repository root as a module, ``python -m benchmarks.NAME --help``. Entry
scripts import only the shared modules -- ``common`` (data folder, argparse blocks, DRIVE / MSD
splits, recipe options, the CLI runner), ``datasets`` (DRIVE / MSD dataset.json converters),
``shifts`` (simulated site shifts), ``rounds`` (the GUI's correction round), ``history``
(training logs), ``brats_data``, ``isic_data`` and the ``_perf_*`` helpers of ``perf`` -- never
one another.
"""
