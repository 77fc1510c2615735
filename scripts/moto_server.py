#!/usr/bin/env python3
"""opsd's moto launcher: moto's server with the extensions in scripts/moto_ext applied first.

moto has no plugin mechanism, so the extensions patch moto's classes before the server starts (see
scripts/moto_ext/__init__.py for the list and scripts/test_moto_ext.py for their tests).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import moto_ext  # noqa: E402
from moto.server import main  # noqa: E402

moto_ext.apply()

if __name__ == "__main__":
    main(sys.argv[1:])
