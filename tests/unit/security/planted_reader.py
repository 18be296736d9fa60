"""A trap: importing this module writes the file named by ``LOWDOSE_TEST_PLANTED_MARKER``.

Security tests name ``tests.unit.security.planted_reader:Reader`` as a catalog
reader: lowdose must refuse the catalog without ever importing this module.
"""

from __future__ import annotations

import os
from pathlib import Path

_marker = os.environ.get("LOWDOSE_TEST_PLANTED_MARKER")
if _marker:
    Path(_marker).write_text("imported")


class Reader:
    """Never used: importing the module is the attack."""
