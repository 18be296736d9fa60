"""Experiments and reports that reproduce and extend the paper (figures, contact sheets, tables)."""
