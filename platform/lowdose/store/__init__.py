"""Zarr + xarray layouts, file ingest, alignment and catalogs.

Never imports torch. Dask appears only as the lazy backing of xarray arrays.
"""
