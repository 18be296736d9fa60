"""The lowdose web dashboard (Panel): :mod:`.data` computes what is shown, :mod:`.app` lays it out.

Needs the ``dashboard`` extra (panel, holoviews, bokeh); import :mod:`.app` only where
that is installed. Never imports torch.
"""
