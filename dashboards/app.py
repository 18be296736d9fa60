"""The lowdose dashboard as a Panel script: ``panel serve dashboards/app.py``.

Prefer ``lowdose dashboard`` (same app, safer defaults). Here the catalog comes from
the ``LOWDOSE_CATALOG`` environment variable (default ``catalogs/demo.yaml``) and the
trusted root from ``LOWDOSE_CATALOG_ROOT``.
"""

import os

from lowdose.dashboard.app import build_app

build_app(
    os.environ.get("LOWDOSE_CATALOG", "catalogs/demo.yaml"),
    root=os.environ.get("LOWDOSE_CATALOG_ROOT")
    or (os.getcwd() if "LOWDOSE_CATALOG" not in os.environ else None),
).servable()
