"""Free-text answer parsing on MedGemma-style sentences, each labelled by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxr_attention.questions.answers import ANSWERS, parse_answer
from cxr_attention.questions.bank import load_question_bank

BANK = Path(__file__).resolve().parents[2] / "config" / "questions.yaml"
TERMS = {finding.name: finding.terms for finding in load_question_bank(BANK).findings}

# (generated text, finding whose terms are passed or None for no terms, expected answer)
CASES = [
    # Leading answer token
    ("Yes.", None, "yes"),
    ("No.", None, "no"),
    ("Answer: yes", None, "yes"),
    ("**No**, there is no pneumothorax.", "Pneumothorax", "no"),
    ("Yes, there is a small left pleural effusion.", "Pleural Effusion", "yes"),
    ("No. The lungs are clear.", None, "no"),
    ("Yes. There is cardiomegaly with an enlarged cardiac silhouette.", "Cardiomegaly", "yes"),
    # Negation cues with scope
    (
        "Based on the chest X-ray provided, there is no clear evidence of a significant pleural "
        "effusion. The costophrenic angles appear sharp.",
        "Pleural Effusion",
        "no",
    ),
    ("No pleural effusion is seen.", "Pleural Effusion", "no"),
    ("Pleural effusion: absent.", "Pleural Effusion", "no"),
    ("There is no evidence of pneumothorax.", "Pneumothorax", "no"),
    ("The chest X-ray shows clear lungs without consolidation.", "Consolidation", "no"),
    ("The lungs are negative for focal consolidation.", "Consolidation", "no"),
    ("The lungs are free of any focal opacity.", "Lung Opacity", "no"),
    ("The cardiomediastinal silhouette is unremarkable.", "Enlarged Cardiomediastinum", "no"),
    ("The cardiac silhouette is within normal limits.", "Cardiomegaly", "no"),
    ("The heart is not enlarged.", "Cardiomegaly", "no"),
    ("Heart size is normal. No pleural effusion or pneumothorax.", "Cardiomegaly", "no"),
    ("Heart size is normal. No pleural effusion or pneumothorax.", "Pleural Effusion", "no"),
    ("Heart size is normal. No pleural effusion or pneumothorax.", "Pneumothorax", "no"),
    ("No acute fracture is identified.", "Fracture", "no"),
    ("There is no evidence of pulmonary edema or vascular congestion.", "Edema", "no"),
    ("Mild pulmonary vascular congestion without frank edema.", "Edema", "no"),
    ("Atelectasis is not present.", "Atelectasis", "no"),
    ("No suspicious pulmonary nodules or masses are seen.", "Lung Lesion", "no"),
    ("Pneumothorax is no longer seen.", "Pneumothorax", "no"),
    ("The lungs are clear, without pleural effusion or pneumothorax.", "Pleural Effusion", "no"),
    ("Support devices: none.", "Support Devices", "no"),
    ("A pneumothorax could not be identified.", "Pneumothorax", "no"),
    ("There are no acute cardiopulmonary abnormalities.", None, "no"),
    # Affirmative finding statements
    ("The heart is enlarged, consistent with cardiomegaly.", "Cardiomegaly", "yes"),
    ("The heart is enlarged, consistent with cardiomegaly.", None, "yes"),
    (
        "There is a right-sided pneumothorax with partial collapse of the right lung.",
        "Pneumothorax",
        "yes",
    ),
    (
        "The image demonstrates an endotracheal tube and a right internal jugular central venous "
        "catheter.",
        "Support Devices",
        "yes",
    ),
    ("A healed fracture of the left sixth rib is seen.", "Fracture", "yes"),
    ("Bilateral interstitial opacities are consistent with pulmonary edema.", "Edema", "yes"),
    ("Patchy bibasilar atelectasis is noted.", "Atelectasis", "yes"),
    ("There is a 2.5 cm nodule in the right upper lobe.", "Lung Lesion", "yes"),
    ("Effusions are seen bilaterally.", "Pleural Effusion", "yes"),
    ("The chest X-ray appears normal.", "No Finding", "yes"),
    ("This is an unremarkable chest radiograph.", "No Finding", "yes"),
    # "Is this chest X-ray normal?": denied abnormality is yes, a stated finding is no
    ("There are no acute cardiopulmonary abnormalities.", "No Finding", "yes"),
    ("The lungs are clear. No pleural effusion or pneumothorax.", "No Finding", "yes"),
    ("The heart size is normal and the lungs are clear.", "No Finding", "yes"),
    ("There is a small left pleural effusion.", "No Finding", "no"),
    (
        "The heart size is normal, but there is a patchy opacity in the left lower lobe.",
        "No Finding",
        "no",
    ),
    ("The chest X-ray is abnormal.", "No Finding", "no"),
    ("There is a possible subtle opacity at the right base.", "No Finding", "unclear"),
    # Mentions of other findings do not decide the asked one
    (
        "There is no pneumothorax. A small right pleural effusion is present.",
        "Pleural Effusion",
        "yes",
    ),
    ("There is no pneumothorax. A small right pleural effusion is present.", "Pneumothorax", "no"),
    ("There is no focal consolidation, and the heart is enlarged.", "Consolidation", "no"),
    ("There is no focal consolidation, and the heart is enlarged.", "Cardiomegaly", "yes"),
    ("The heart is mildly enlarged but there is no pulmonary edema.", "Cardiomegaly", "yes"),
    ("The heart is mildly enlarged but there is no pulmonary edema.", "Edema", "no"),
    # The finding is not named: denials count, affirmations about other things do not
    ("Air bronchograms are seen in the right lower lobe.", "Pneumothorax", "unclear"),
    ("There is evidence of fluid overload.", "Pleural Effusion", "unclear"),
    ("No acute cardiopulmonary process.", "Pneumothorax", "no"),
    # Pseudo-negation and double negation
    (
        "There is no significant change in the moderate right pleural effusion.",
        "Pleural Effusion",
        "yes",
    ),
    (
        "The pleural effusion is not without significance; it is moderate in size.",
        "Pleural Effusion",
        "yes",
    ),
    # Hedging
    (
        "There is a possible small effusion, but it is difficult to say.",
        "Pleural Effusion",
        "unclear",
    ),
    ("A small left pleural effusion cannot be excluded.", "Pleural Effusion", "unclear"),
    ("Pneumothorax cannot be ruled out on this single view.", "Pneumothorax", "unclear"),
    ("I cannot rule out a small right apical pneumothorax.", "Pneumothorax", "unclear"),
    ("The findings may represent early pneumonia.", "Pneumonia", "unclear"),
    ("The right lower lobe opacity is suggestive of pneumonia.", "Pneumonia", "unclear"),
    (
        "There is blunting of the left costophrenic angle, which may represent a small pleural "
        "effusion.",
        "Pleural Effusion",
        "unclear",
    ),
    ("Possible trace left pleural effusion.", "Pleural Effusion", "unclear"),
    # Explicit answer words later in the text; an echoed question states nothing
    ("Based on the image provided, the answer is no.", "Pleural Effusion", "no"),
    ("Looking at the costophrenic angles, yes, there is blunting on the left.", None, "yes"),
    ("Is there a pleural effusion? No, there is not.", "Pleural Effusion", "no"),
    ("Is there a pneumothorax? There is no pneumothorax.", "Pneumothorax", "no"),
    ("Negative.", None, "no"),
    ("Positive.", None, "yes"),
    ("The heart size is at the upper limits of normal.", "Cardiomegaly", "unclear"),
    # Structured answers with headings
    (
        "**Pleural Effusion:** There is blunting of the right costophrenic angle, which is "
        "suggestive of a small right pleural effusion.\n\n**Other findings:** The heart size "
        "appears within normal limits. No pneumothorax is seen.",
        "Pleural Effusion",
        "unclear",
    ),
    ("**Pneumothorax:** Present at the right apex.", "Pneumothorax", "yes"),
    ("**Findings:**\n- Pneumothorax: none\n- Pleural effusion: none", "Pneumothorax", "no"),
    # Refusals and empty answers
    (
        "I am unable to provide a diagnosis based on this image. Please consult a qualified "
        "radiologist.",
        None,
        "unclear",
    ),
    (
        "I'm sorry, but I cannot determine whether there is a pleural effusion from this image "
        "alone.",
        "Pleural Effusion",
        "unclear",
    ),
    ("", None, "unclear"),
    ("The image is a frontal chest radiograph.", None, "unclear"),
]


@pytest.mark.parametrize(("text", "finding", "expected"), CASES)
def test_parse_answer_on_medgemma_style_sentences(text, finding, expected):
    terms = TERMS[finding] if finding else ()
    # As the runner calls it: the No Finding question asks whether the image is normal.
    asks_normal = finding == "No Finding"
    assert parse_answer(text, terms=terms, asks_normal=asks_normal) == expected


def test_cases_cover_every_answer_and_many_sentences():
    assert len(CASES) >= 40
    assert {expected for _text, _finding, expected in CASES} == set(ANSWERS)


def test_terms_restrict_the_decision_to_the_asked_finding():
    text = "There is no pneumothorax. A small right pleural effusion is present."
    assert parse_answer(text, terms=TERMS["Pleural Effusion"]) == "yes"
    assert parse_answer(text, terms=TERMS["Pneumothorax"]) == "no"


def test_terms_absent_from_the_text_fall_back_to_every_clause():
    # No pleural-effusion term occurs: the negated clause decides.
    assert parse_answer("The lungs are clear.", terms=TERMS["Pleural Effusion"]) == "no"


def test_boilerplate_after_a_clear_answer_keeps_the_answer():
    text = "There is no pleural effusion. Please consult a radiologist for clinical correlation."
    assert parse_answer(text) == "no"
    assert parse_answer(text, terms=TERMS["Pleural Effusion"]) == "no"


def test_leading_no_followed_by_a_noun_is_a_negation_not_an_answer_token():
    # "No" + noun negates the noun; the hedge elsewhere in its clause still makes it unclear.
    assert parse_answer("No definite effusion, possibly a trace.", terms=["effusion"]) == "unclear"
