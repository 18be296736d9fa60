"""Physics of the simulated data: atomic models, optics, multislice imaging, noise.

numpy, scipy, ase and abTEM only: never dask, never torch.
"""
