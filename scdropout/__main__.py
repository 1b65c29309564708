"""Run the command line interface: ``python -m scdropout``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
