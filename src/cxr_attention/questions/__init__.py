"""Questions and answers: the question bank, VQA tables, label policies and answer parsing.

Modules (imported on demand; this package imports nothing heavy):

- ``bank``: the CheXpert question bank (``config/questions.yaml``) and its question table.
- ``vqa``: a VQA table in the reference runner's format, read as a question table.
- ``table``: the question table a study asks (``questions.csv``), from either source.
- ``labels``: label policies and (image, question) samples with their expected answers.
- ``answers`` / ``answer_cues``: free-text answer parsing into yes / no / unclear.
"""
