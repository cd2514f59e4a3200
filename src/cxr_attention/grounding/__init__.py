"""Grounding: do the maps land where radiologists mark the finding?

:mod:`cxr_attention.grounding.regions` turns boxes and masks into regions on the token grid and
scores maps against them (torch-free).
"""
