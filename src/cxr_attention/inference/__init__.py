"""Inference: load MedGemma, ask yes/no questions, capture attention to the image tokens.

Modules (imported on demand; this package imports nothing heavy):

- ``tiny_model``: a randomly initialised, offline Gemma 3 folder with MedGemma's architecture
  traits, for tests and benchmarks; the full-size MedGemma 4B config.
- ``model``: load a model and its processor with transformers' Auto classes.
- ``prompting``: the chat-template inputs of one (image, question) pair.
- ``capture``: generation that records attention probabilities to the image tokens.
- ``scoring``: P(yes) from the first answer token's log-probabilities.
- ``runner``: one manifest shard end to end (answers table, capture arrays, resume, failures).
- ``questions`` / ``answers``: the question bank and free-text answer parsing.
"""
