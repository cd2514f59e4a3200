"""The maps stage's settings (``config["maps"]``) as one frozen dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from cxr_attention.maps.registry import METHODS, RENAMED, check_cascade, check_methods

__all__ = ["ACCEPTED_KEYS", "MODES", "RULE_KEYS", "WORKFLOW_KEYS", "MapParams"]

MODES = ("cascade", "all", "methods")
"""Values of ``method`` besides one method's name: the cascade's pick per target, every
registered method, or the methods listed in ``methods`` (the study; the maps stage's mode)."""

RULE_KEYS = ("seed", "min_free_gpu_gb", "device")
"""Keys the maps rule adds to the ``maps`` section: the run's seed and the model's loading
(``min_free_gpu_gb``, ``device``: read by :mod:`cxr_attention.maps.shard`, not kept here)."""

WORKFLOW_KEYS = ("head_calibration",)
"""Keys of the schema's ``maps`` section that the workflow reads and the maps stage does not:
``head_calibration`` names the split ``head_selected``'s heads are chosen on (rules/heads.smk);
the maps rule gets the heads chosen as a file, never the key."""


_STUDY_METHODS = (
    "attention",
    "term_attention",
    "gated_answer",
    "gradcam",
    "activation_norm",
    "uniform",
    "random",
)


@dataclass(frozen=True)
class MapParams:
    """Settings of the maps stage. Defaults equal ``config/config.schema.json``'s (a test).

    Attributes
    ----------
    method : str
        ``"cascade"`` (default: ``cxr-attention explain``'s), ``"all"``, ``"methods"`` (the
        listed ``methods``, which the maps stage always uses), or one registered method to force.
    methods : tuple of str
        The methods every target of the study gets a map of (``maps.methods``).
    per_layer : bool
        Also one decision map per captured decoder layer (``attention``; ``per_layer`` rows).
    cascade : tuple of str
        The methods the cascade tries in order (``maps.cascade``); a method skips the target
        sources it does not apply to (``MapMethod.cascade_sources``). Must end with a method that
        always gives a map.
    layers : tuple of int or None
        Decoder layers to average (absolute indices, or negative from the last captured one);
        None: every captured layer.
    heads : tuple of int or None
        Query heads to average; None: all.
    min_image_mass : float
        An attention map whose image mass (before renormalisation) is below this is skipped.
    strip_border : int
        Rings of border tokens zeroed before renormalising (0: keep them; the config's boolean
        ``true`` is one ring).
    gradcam_layer : int
        Vision encoder layer of ``gradcam`` (``-1``: last).
    gradcam_max_rows : int
        Targets of one sample per batched Grad-CAM pass: on the 4B model in bfloat16 a pass of 8
        needs about 18 GB of GPU memory, one about 9 GB (bench/RESULTS.md).
    activation_layer : int
        Vision encoder layer of ``activation_norm`` (``-1``: last).
    rollout_layers, relevancy_layers : str or tuple of int
        Decoder layers ``rollout`` and ``relevancy`` propagate through: ``"all"``,
        ``"last_global"`` (the last full-attention layer) or indices (negative from the last).
    relative_attention_layers : str or tuple of int
        Decoder layers whose attention ``relative_attention`` averages (same forms).
    decoder_gradcam_layer : str or tuple of int
        Decoder layer(s) whose hidden states ``decoder_gradcam`` reads (same forms).
    ig_steps : int
        Integration steps of ``integrated_gradients`` (midpoint rule).
    rise_masks : int
        Random masks of ``rise``.
    rise_cells : int
        Side of the coarse random grid each RISE mask is upsampled from.
    rise_keep : float
        Probability that a coarse cell is kept (not masked).
    localization_heads : tuple of (int, int) or None
        The ``(layer, head)`` pairs ``head_selected`` averages: set by hand, or chosen on the
        calibration split (``maps.head_calibration``) by
        :func:`~cxr_attention.maps.methods.head_selected.select_heads`; None: none chosen.
    perturbation_max_rows : int
        Rows per forward pass of ``integrated_gradients`` and ``rise`` (bounds the memory).
    seed : int
        The run's seed (``config["seed"]``), for methods that draw at random.
    reference_compat : bool
        Take positions 1:257 of the prompt as the image tokens, as the reference study did.
        Never the default, and not a config key of the maps stage (the ``reference_compat``
        rule does that); for :func:`~cxr_attention.maps.shard.explain_maps` callers only.
    """

    method: str = "cascade"
    methods: tuple[str, ...] = _STUDY_METHODS
    per_layer: bool = True
    cascade: tuple[str, ...] = _STUDY_METHODS[:-1]  # random is no fallback
    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    min_image_mass: float = 0.05
    strip_border: int = 0
    gradcam_layer: int = -1
    gradcam_max_rows: int = 8
    activation_layer: int = -1
    rollout_layers: str | tuple[int, ...] = "all"
    relevancy_layers: str | tuple[int, ...] = "all"
    relative_attention_layers: str | tuple[int, ...] = "all"
    decoder_gradcam_layer: str | tuple[int, ...] = "last_global"
    ig_steps: int = 32
    rise_masks: int = 256
    rise_cells: int = 4
    rise_keep: float = 0.5
    perturbation_max_rows: int = 16
    localization_heads: tuple[tuple[int, int], ...] | None = None
    seed: int = 0
    reference_compat: bool = False

    def __post_init__(self):
        if self.method not in (*MODES, *METHODS):
            if self.method in RENAMED:
                check_methods([self.method], "maps.method")  # says what it is called now
            raise ValueError(
                f"unknown map method {self.method!r}; choose one of {MODES} or of {METHODS}"
            )
        object.__setattr__(self, "cascade", check_cascade(self.cascade))
        object.__setattr__(self, "methods", check_methods(self.methods, "maps.methods"))
        if not 0 <= self.min_image_mass <= 1:
            raise ValueError(f"min_image_mass must be in [0, 1], got {self.min_image_mass}")
        if self.gradcam_max_rows < 1:
            raise ValueError(f"gradcam_max_rows must be at least 1, got {self.gradcam_max_rows}")

    @classmethod
    def from_dict(cls, params: Mapping | None) -> MapParams:
        """From the rule's mapping: lists become tuples; an unknown key is a ValueError.

        Accepted: :data:`ACCEPTED_KEYS`, the schema's ``maps`` keys and :data:`RULE_KEYS`.
        """
        values = {}
        for key, value in dict(params or {}).items():
            if key not in ACCEPTED_KEYS:
                raise ValueError(
                    f"unknown maps setting {key!r}; known: {', '.join(sorted(ACCEPTED_KEYS))}"
                )
            index_list = key in ("layers", "heads") and value is not None
            # a method's layer setting: "all", "last_global", one index or a list of them
            if index_list or (key.endswith(("_layers", "_layer")) and isinstance(value, list)):
                value = tuple(int(v) for v in value)
            elif key == "localization_heads" and value is not None:
                value = tuple((int(layer), int(head)) for layer, head in value)
            elif key in ("cascade", "methods"):
                value = tuple(str(v) for v in value)
            elif key == "per_layer":
                value = bool(value)
            elif key in (
                "strip_border",
                "gradcam_layer",
                "gradcam_max_rows",
                "activation_layer",
                "ig_steps",
                "rise_masks",
                "rise_cells",
                "perturbation_max_rows",
                "seed",
            ):
                value = int(value)  # the config's boolean strip_border means one ring
            elif key in ("min_image_mass", "rise_keep"):
                value = float(value)
            if key in _FIELDS:
                values[key] = value
        return cls(**values)


_FIELDS = {f.name for f in fields(MapParams)}
ACCEPTED_KEYS = frozenset(_FIELDS - {"reference_compat"} | set(RULE_KEYS))
"""Keys :meth:`MapParams.from_dict` accepts: the schema's ``maps`` section and the rule's."""
