from napari_drunet.cli import main

raise SystemExit(main())
