"""Token-conditioned maps over the 16 x 16 image-token grid, with a recorded fallback cascade.

Methods: ``attention``, ``term_attention`` and ``gated_answer`` (captured attention),
``gradcam`` and ``activation_norm`` (vision tower), ``uniform``, ``random``. See ``docs/maps.md``.
"""

# No re-exports: each rule imports (and lists as input) only the modules it runs.
