"""``python -m napari_fbrs`` runs the ``napari-fbrs`` command line."""

import sys

from napari_fbrs.cli import main

if __name__ == "__main__":
    sys.exit(main())
