"""Map methods: one class per file, each registered in :mod:`cxr_attention.maps.registry`.

The contract every method follows is in :mod:`.base`; ``docs/extending.md`` shows how to add one.
"""

# No re-exports: the registry imports each method's module.
