"""The reference study's replay: its maps and metrics from this project's captures (never default).

The study this project reimplements (public repository UNHSAILLab/lvlm-interpret-medgemma; see
``docs/reference_study.md`` for every file and line cited here) reported attention numbers that
two defects of its code explain. This module reproduces them from the *same* captured run as the
corrected pipeline, so that a report can put both side by side on the same samples:

Image tokens taken as key positions 1:257
    ``medgemma_attention_extraction.py`` (``extract_self_attention``, ``find_image_token_span``)
    takes the 256 keys after position 0 as the image tokens. With Gemma 3's chat template and the
    question before the image, those are ``<start_of_turn>``, the chat and question tokens,
    ``<start_of_image>`` and only then most of the image. Position 1 is an attention sink: in the
    reference's own saved grids (``medgemma4b_results_fixed``) 69-73% of every map sits on grid
    cell 0. :func:`~cxr_attention.reference.attention.reference_image_slice` and
    :func:`~cxr_attention.reference.attention.reference_attention_grid` rebuild those maps
    from a capture (head mean, the reference's row choice, its per-layer normalisation and its
    layer weights 4/7, 2/7, 1/7).

The inverted Otsu "body" mask
    ``tight_body_mask`` (``models/medgemma/medgemma_launch_mimic_fixed.py``) blurs, thresholds
    with Otsu, then *inverts* the result ("Foreground bright on CXR -> invert"), so the mask keeps
    the dark pixels: outside air and aerated lung, not the body. :func:`reference_body_mask`
    reproduces it on the image as the model saw it (:func:`reference_model_view`, 896 x 896).
    The runner's per-map inside-body (0.13-0.19) came from another mask, not inverted, the
    largest contour (:func:`runner_body_mask`); :mod:`~cxr_attention.reference.mask_replay`
    replays both on a reference-shaped grid and shows that this one reproduces the paper's range.

Its metrics
    :func:`reference_map_metrics` gives the runner's ``AttentionMetrics.compute_metrics`` values
    (entropy of the masked, renormalised grid in nats; focus = largest masked cell *before*
    renormalising; inside-body = masked share of the grid; a border fraction that counts the four
    corner cells twice) and the batch runner's inside-body ratio, which multiplies the grid by a
    token mask and renormalises *before* summing, so that it is 1 - 1e-8 for every map
    (``compute_attention_metrics``): the paper's "99.99% within anatomical boundaries".

What is not reproduced: the reference re-ran a forward pass over the generated sequence without
``token_type_ids`` (image tokens then attend causally instead of bidirectionally) and read its
attention from that pass; here the attention comes from the generation itself.
Modules: :mod:`~cxr_attention.reference.masks` (the model view, the inverted Otsu mask and the
runner's mask), :mod:`~cxr_attention.reference.mask_replay` (both masks on a reference-shaped grid),
:mod:`~cxr_attention.reference.attention` (the 1:257 slice, rows and layer weights),
:mod:`~cxr_attention.reference.metrics` (its metric definitions) and
:mod:`~cxr_attention.reference.shard` (the ``reference_compat`` rule's table: the reference's
numbers beside the corrected answer map that the maps stage wrote).
"""

# No re-exports: each rule imports (and lists as input) only the modules it runs.
