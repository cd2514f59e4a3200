"""The map methods, in display order: the single source of their names, labels, colours and
caption text (figures, report, CLI choices, the config schema's enums; a test checks the schema).

Adding a method: its class in ``methods/<name>.py``, one import and one entry below
(``docs/extending.md``).
"""

from __future__ import annotations

from cxr_attention.maps.methods.activation_norm import ActivationNorm
from cxr_attention.maps.methods.attention import Attention
from cxr_attention.maps.methods.attention_nosink import AttentionNoSink
from cxr_attention.maps.methods.base import MapMethod
from cxr_attention.maps.methods.decoder_gradcam import DecoderGradCAM
from cxr_attention.maps.methods.gated_answer import GatedAnswer
from cxr_attention.maps.methods.gradcam import GradCAM
from cxr_attention.maps.methods.head_selected import HeadSelected
from cxr_attention.maps.methods.integrated_gradients import IntegratedGradients
from cxr_attention.maps.methods.random import Random
from cxr_attention.maps.methods.relative_attention import RelativeAttention
from cxr_attention.maps.methods.relevancy import Relevancy
from cxr_attention.maps.methods.rise import Rise
from cxr_attention.maps.methods.rollout import Rollout
from cxr_attention.maps.methods.term_attention import TermAttention
from cxr_attention.maps.methods.uniform import Uniform

__all__ = [
    "LAST_RESORT",
    "METHODS",
    "METHOD_COLOURS",
    "METHOD_DESCRIPTIONS",
    "METHOD_LABELS",
    "REGISTRY",
    "RENAMED",
    "check_cascade",
    "check_methods",
    "get_method",
    "method_caption",
]

REGISTRY: dict[str, MapMethod] = {
    method.name: method
    for method in (
        Attention(),
        TermAttention(),
        GatedAnswer(),
        GradCAM(),
        ActivationNorm(),
        Uniform(),
        Random(),
        Rollout(),
        Relevancy(),
        DecoderGradCAM(),
        IntegratedGradients(),
        Rise(),
        RelativeAttention(),
        AttentionNoSink(),
        HeadSelected(),
    )
}

METHODS = tuple(REGISTRY)
"""Method names in display order (``--method all`` computes them in this order)."""

LAST_RESORT = Uniform.name
"""What a forced method falls back to; in ``all``, its map records why the others failed."""

METHOD_LABELS = {name: method.label for name, method in REGISTRY.items()}
METHOD_COLOURS = {name: method.colour for name, method in REGISTRY.items()}
METHOD_DESCRIPTIONS = {name: method.description for name, method in REGISTRY.items()}


def get_method(name: str) -> MapMethod:
    """The registered method ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown map method {name!r}; known: {', '.join(METHODS)}") from None


RENAMED = {
    "attention_gated": "gated_answer (the answer's rows reweighted by their attention to the "
    "term, not a map of the term; term_attention is the term tokens' own attention)",
}
"""Former method names, and what replaced them (a config naming one gets this as its error)."""


def check_methods(names, key: str = "maps.methods") -> tuple[str, ...]:
    """A list of registered method names, at least one, none twice; ValueError naming ``key``,
    the unknown names (and what a renamed one is called now) otherwise."""
    names = tuple(names)
    renamed = [f"{name} is now {RENAMED[name]}" for name in names if name in RENAMED]
    if renamed:
        raise ValueError(f"{key}: {'; '.join(renamed)}")
    unknown = [name for name in names if name not in REGISTRY]
    if not names or unknown:
        raise ValueError(
            f"{key} {list(names)}: unknown method(s) {unknown}; known: {', '.join(METHODS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"{key} {list(names)} names a method twice")
    return names


def check_cascade(names) -> tuple[str, ...]:
    """``maps.cascade`` checked: registered names, ending with one that always gives a map."""
    names = check_methods(names, "maps.cascade")
    if not REGISTRY[names[-1]].never_unavailable:
        always = [name for name, method in REGISTRY.items() if method.never_unavailable]
        raise ValueError(
            f"maps.cascade {list(names)} must end with a method that always gives a map "
            f"({', '.join(always)})"
        )
    return names


def method_caption(names=METHODS) -> str:
    """One sentence per method, for report captions: ``"Grad-CAM: Grad-CAM on ..."``."""
    return " ".join(f"{REGISTRY[name].label}: {REGISTRY[name].description}." for name in names)
