"""Inference: load MedGemma, ask yes/no questions, capture attention to the image tokens.

Modules (imported on demand; this package imports nothing heavy):

- ``model``: load a model and its processor with transformers' Auto classes.
- ``prompting``: the chat-template inputs of one (image, question) pair.
- ``capture``: generation that records attention probabilities to the image tokens.
- ``scoring``: P(yes) from the first answer token's log-probabilities.
- ``runner``: one manifest shard end to end (answers table, capture arrays, resume, failures).

The question bank and answer parsing live in ``cxr_attention.questions``, the tiny test model in
``cxr_attention.models``, the attention hooks in ``cxr_attention.attention_hooks``.
"""
