"""Tests of the browser app (`cxr-attention app`), called over HTTP."""
