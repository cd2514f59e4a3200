"""What the app's tests share: the page's settings for the tiny model, and serving a page."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from cxr_attention.app import ExplainSettings
from cxr_attention.settings import schema_defaults


def explain_settings() -> ExplainSettings:
    """The schema's explain settings, with a short answer (the tiny model's answer is noise)."""
    defaults = schema_defaults()
    return ExplainSettings(
        layers=defaults["inference"]["layers"],
        method=defaults["maps"]["method"],
        max_new_tokens=6,
        image_first=defaults["inference"]["image_first"],
        max_side=defaults["preprocess"]["max_side"],
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(page) -> Iterator:
    """A `gradio_client.Client` of ``page`` launched on a free local port, closed afterwards."""
    from gradio_client import Client

    page.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True)
    try:
        yield Client(page.local_url, verbose=False)
    finally:
        page.close()


def explain_directly(
    radiograph, question: str, out_dir, loaded, model_dir, *, terms=(), method=None, **options
):
    """The oracle: `explain()` called as the CLI calls it, outside the page, with its settings
    (``terms`` and ``method`` as ``--term`` and ``--method`` change them; ``options``: explain's
    optional outputs, ``faithfulness=True``, ``reliance=True``, ...)."""
    from cxr_attention.explain import explain

    settings = explain_settings()
    result = explain(
        radiograph,
        question=question,
        model_id=str(model_dir),
        out_dir=out_dir,
        layers=settings.layers,
        terms=terms,
        method=settings.method if method is None else method,
        max_new_tokens=settings.max_new_tokens,
        image_first=settings.image_first,
        max_side=settings.max_side,
        loaded_model=loaded,
        **options,
    )
    assert result.failure is None, result.failure
    return result
