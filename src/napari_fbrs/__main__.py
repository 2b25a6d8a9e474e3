"""``python -m napari_fbrs`` runs the command line."""

import sys

from napari_fbrs.cli import main

sys.exit(main())
