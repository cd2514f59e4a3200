"""Preprocessing: MIMIC-CXR inputs, decoding to 8-bit images, body and lung masks.

Submodules are imported on demand (``from cxr_attention.preprocess import decode``) so that the
command line and the workflow scripts only pay for OpenCV and pydicom when they need them.
"""
