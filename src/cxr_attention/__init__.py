"""cxr-attention: where a medical vision-language model looks when it reads a chest X-ray."""

__version__ = "0.1.0"
