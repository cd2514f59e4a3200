"""Model definitions built here (no download): MedGemma 4B's architecture and the tiny test model.

- ``gemma3``: Gemma 3 configs with MedGemma's traits; random-weight models for benchmarks.
- ``tiny``: the tiny, offline MedGemma look-alike folder used by the demo and the tests.
"""
