"""Token-conditioned maps over the 16 x 16 image-token grid, with a recorded fallback cascade.

Methods: ``attention`` and ``attention_gated`` (captured attention), ``gradcam`` and
``activation_norm`` (vision tower), ``uniform``. See ``docs/maps.md``.
"""

from cxr_attention.maps.cascade import (
    MAP_COLUMNS,
    METHODS,
    MapParams,
    MapRecord,
    MapTarget,
    SampleKey,
    compute_maps,
    locate_targets,
)
from cxr_attention.maps.grid import MapUnavailable, clip_for_display, strip_outer_ring
from cxr_attention.maps.shard import explain_maps, load_capture, run_maps_shard, write_maps
from cxr_attention.maps.terms import TermMatch, find_term_positions

__all__ = [
    "MAP_COLUMNS",
    "METHODS",
    "MapParams",
    "MapRecord",
    "MapTarget",
    "MapUnavailable",
    "SampleKey",
    "TermMatch",
    "clip_for_display",
    "compute_maps",
    "explain_maps",
    "find_term_positions",
    "load_capture",
    "locate_targets",
    "run_maps_shard",
    "strip_outer_ring",
    "write_maps",
]
