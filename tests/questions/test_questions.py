"""Question bank, question tables, VQA tables in the reference format, labels and samples."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_attention.io import ConfigError
from cxr_attention.questions.bank import (
    CHEXPERT_FINDINGS,
    HARD_POSITIVE_KINDS,
    QUESTION_COLUMNS,
    STRATEGIES,
    build_question_table,
    load_question_bank,
)
from cxr_attention.questions.labels import SAMPLE_COLUMNS, expand_samples, expected_answer
from cxr_attention.questions.vqa import infer_finding, normalise_yes_no, read_vqa_table

BANK_PATH = Path(__file__).resolve().parents[2] / "config" / "questions.yaml"


@pytest.fixture(scope="module")
def bank():
    return load_question_bank(BANK_PATH)


# --- the shipped bank ----------------------------------------------------------------------------


def test_bank_covers_the_14_chexpert_findings_with_safe_slugs(bank):
    assert [f.name for f in bank.findings] == list(CHEXPERT_FINDINGS)
    assert len({f.slug for f in bank.findings}) == 14
    assert all(re.fullmatch(r"[a-z0-9_]+", f.slug) for f in bank.findings)


def test_every_bank_question_is_a_distinct_yes_no_question(bank):
    auxiliaries = ("is", "are", "does", "do", "can", "apart", "other", "on", "in", "looking")
    for finding in bank.findings:
        questions = [finding.baseline, finding.plain] + [q for _k, q in finding.hard_positives]
        assert len({q.casefold() for q in questions}) == len(questions), finding.name
        for question in questions:
            assert question.endswith("?"), question
            assert question.split()[0].casefold().strip(",") in auxiliaries, question
        assert 3 <= len(finding.hard_positives) <= 5, finding.name
        assert {kind for kind, _q in finding.hard_positives} <= set(HARD_POSITIVE_KINDS)


def test_technical_questions_name_the_finding_by_one_of_its_terms(bank):
    for finding in bank.findings:
        for question in [finding.baseline] + [q for _k, q in finding.hard_positives]:
            lowered = question.casefold()
            assert any(term.casefold() in lowered for term in finding.terms), question


def test_no_rewrite_introduces_a_negation(bank):
    negations = re.compile(r"\b(no|not|without|absent|free of|never)\b")
    for finding in bank.findings:
        for question in [finding.plain] + [q for _k, q in finding.hard_positives]:
            before = len(negations.findall(finding.baseline.casefold()))
            assert len(negations.findall(question.casefold())) == before, question


def test_pleural_effusion_plain_question_is_not_pulmonary_edema(bank):
    effusion = bank.finding("Pleural Effusion")
    assert effusion.plain == "Is there fluid around the lungs?"
    assert "fluid in the pleural space" in [
        q.rstrip("?").split("there ")[-1] for _k, q in effusion.hard_positives
    ]
    assert bank.finding("Edema").plain == "Is there fluid in the lungs?"


# --- bank validation -----------------------------------------------------------------------------

VALID_FINDING = """\
  - name: Pleural Effusion
    slug: pleural_effusion
    terms: [effusion]
    baseline: Is there a pleural effusion?
    plain: Is there fluid around the lungs?
    hard_positive:
      - kind: phrasing_variation
        question: Is a pleural effusion present?
"""


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("phrasing_variation", "rewording"), "findings[0].hard_positive[0].kind"),
        (("Pleural Effusion", "Effusion"), "findings[0].name"),
        (("slug: pleural_effusion", "slug: Pleural-Effusion"), "findings[0].slug"),
        (("terms: [effusion]", "terms: []"), "findings[0].terms"),
        (("baseline: Is there a pleural effusion?", "baseline: There is effusion."), "baseline"),
        (("    plain: Is there fluid around the lungs?\n", ""), "findings[0].plain"),
        (
            ("question: Is a pleural effusion present?", "question: Is there a pleural effusion?"),
            "findings[0].hard_positive[0].question",
        ),
    ],
)
def test_bank_errors_name_the_file_and_the_key(tmp_path, edit, key):
    path = tmp_path / "bank.yaml"
    path.write_text("findings:\n" + VALID_FINDING.replace(*edit))
    with pytest.raises(ConfigError) as caught:
        load_question_bank(path)
    assert str(path) in str(caught.value)
    assert key in str(caught.value)


def test_bank_rejects_duplicates_missing_files_and_bad_yaml(tmp_path):
    path = tmp_path / "bank.yaml"
    path.write_text("findings:\n" + VALID_FINDING + VALID_FINDING)
    with pytest.raises(ConfigError, match="duplicated"):
        load_question_bank(path)
    with pytest.raises(ConfigError, match="not found"):
        load_question_bank(tmp_path / "absent.yaml")
    path.write_text("findings: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_question_bank(path)
    path.write_text("questions: []\n")
    with pytest.raises(ConfigError, match="findings"):
        load_question_bank(path)


def test_a_valid_small_bank_loads(tmp_path):
    path = tmp_path / "bank.yaml"
    path.write_text("findings:\n" + VALID_FINDING)
    loaded = load_question_bank(path)
    assert loaded.findings[0].hard_positives == (
        ("phrasing_variation", "Is a pleural effusion present?"),
    )


# --- question table ------------------------------------------------------------------------------


def test_question_table_ids_strategies_and_links(bank):
    table = build_question_table(bank, findings=None, strategies=STRATEGIES)
    assert list(table.columns) == list(QUESTION_COLUMNS)
    assert len(table) == sum(2 + len(f.hard_positives) for f in bank.findings)
    assert table["question_id"].is_unique
    assert (table["dicom_id"] == "").all() and (table["expected_answer"] == "").all()
    for row in table.itertuples():
        slug = bank.finding(row.finding).slug
        assert row.question_id == f"{slug}.{row.strategy}.{row.variant_index}"
        assert row.baseline_question_id == f"{slug}.baseline.0"
        finding = bank.finding(row.finding)
        assert row.answer_terms.split("|") == list(finding.terms)
        assert row.target_terms.split("|") == list(finding.terms + finding.related_terms)
    kinds = table.groupby("strategy")["variant_kind"].agg(set)
    assert kinds["baseline"] == {"original"} and kinds["plain"] == {"plain_language"}
    assert kinds["hard_positive"] <= set(HARD_POSITIVE_KINDS)
    for finding in bank.findings:
        rows = table[table["finding"] == finding.name]
        assert rows["strategy"].tolist()[:2] == ["baseline", "plain"]
        hard = rows[rows["strategy"] == "hard_positive"]
        assert hard["variant_index"].tolist() == list(range(1, len(finding.hard_positives) + 1))
        assert hard["question"].tolist() == [q for _k, q in finding.hard_positives]


def test_question_table_selects_findings_and_strategies(bank):
    table = build_question_table(
        bank, findings=["Pneumothorax", "Cardiomegaly"], strategies=["baseline", "hard_positive"]
    )
    # Bank order, not request order; no plain questions.
    assert table["finding"].unique().tolist() == ["Cardiomegaly", "Pneumothorax"]
    assert set(table["strategy"]) == {"baseline", "hard_positive"}
    only_plain = build_question_table(bank, findings=None, strategies=["plain"])
    assert set(only_plain["baseline_question_id"]) == {
        f"{f.slug}.baseline.0" for f in bank.findings
    }
    with pytest.raises(ConfigError, match="paraphrase"):
        build_question_table(bank, findings=None, strategies=["paraphrase"])
    with pytest.raises(ConfigError, match="Hernia"):
        build_question_table(bank, findings=["Hernia"], strategies=STRATEGIES)


def test_question_table_round_trips_through_csv(bank, tmp_path):
    table = build_question_table(bank, findings=None, strategies=STRATEGIES)
    path = tmp_path / "questions.csv"
    table.to_csv(path, index=False)
    back = pd.read_csv(path, dtype={"variant_index": int}, keep_default_na=False)
    back = back.astype({c: str for c in QUESTION_COLUMNS if c != "variant_index"})
    pd.testing.assert_frame_equal(back, table)


# --- labels --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "uncertain", "blank", "expected"),
    [
        (1.0, "exclude", "exclude", "yes"),
        (0.0, "exclude", "exclude", "no"),
        (1, "negative", "negative", "yes"),
        (-1.0, "exclude", "exclude", None),
        (-1.0, "positive", "exclude", "yes"),
        (-1.0, "negative", "exclude", "no"),
        (math.nan, "positive", "exclude", None),
        (None, "positive", "exclude", None),
        (np.float64("nan"), "exclude", "negative", "no"),
        (None, "exclude", "negative", "no"),
    ],
)
def test_expected_answer_policies(label, uncertain, blank, expected):
    assert expected_answer(label, uncertain=uncertain, blank=blank) == expected


def test_a_blank_no_finding_is_a_negative_under_every_blank_policy():
    # CheXpert's "No Finding" is 1 or blank, never 0: blank means the report names a finding
    # (issue 15, item 12). Other findings keep the blank policy.
    for blank in ("exclude", "negative"):
        assert expected_answer(None, uncertain="exclude", blank=blank, finding="No Finding") == "no"
        assert expected_answer(1.0, uncertain="exclude", blank=blank, finding="No Finding") == "yes"
    assert expected_answer(None, uncertain="exclude", blank="exclude", finding="Edema") is None


def test_expected_answer_rejects_unknown_policies_and_labels():
    with pytest.raises(ValueError, match=r"'exclude', 'positive', 'negative'"):
        expected_answer(1.0, uncertain="ones", blank="exclude")
    with pytest.raises(ValueError, match=r"'exclude', 'negative'"):
        expected_answer(1.0, uncertain="exclude", blank="positive")
    with pytest.raises(ValueError, match="not 1, 0, -1"):
        expected_answer(2.0, uncertain="exclude", blank="exclude")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Yes", "yes"), (" no. ", "no"), ("TRUE", "yes"), ("0", "no"), ("left", ""), ("", "")],
)
def test_normalise_yes_no(raw, expected):
    assert normalise_yes_no(raw) == expected


# --- VQA table in the reference format -----------------------------------------------------------


def _write_vqa(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _reference_rows() -> list[dict]:
    """Rows shaped like the reference's medical-cxr-vqa-questions_sample_hardpositives.csv."""
    base = {"study_id": "50712381", "dicom_id": "d1", "image_path": "files/p1/d1.jpg"}
    q0 = "is there cardiomegaly?"
    return [
        {
            **base,
            "question": q0,
            "answer": "yes",
            "baseline_question": q0,
            "question_variant": "original",
            "variant_index": 0,
            "strategy": "baseline",
        },
        {
            **base,
            "question": "Is the heart enlarged?",
            "answer": "yes",
            "baseline_question": q0,
            "question_variant": "hard_positive_strategy-1",
            "variant_index": 1,
            "strategy": "synonym replacement",
        },
        {
            **base,
            "question": "Is cardiomegaly present?",
            "answer": "Yes",
            "baseline_question": q0,
            "question_variant": "hard_positive_strategy-2",
            "variant_index": 2,
            "strategy": "Phrasing variation",
        },
        # The same group asked again of the same image (the reference repeats groups).
        {
            **base,
            "question": q0,
            "answer": "yes",
            "baseline_question": q0,
            "question_variant": "original",
            "variant_index": 0,
            "strategy": "baseline",
        },
        {
            **base,
            "question": "Is there an enlarged heart?",
            "answer": "yes",
            "baseline_question": q0,
            "question_variant": "hard_positive_strategy-1",
            "variant_index": 1,
            "strategy": "synonym replacement + phrasing variation",
        },
        # A group whose baseline question is not itself a row, on another image.
        {
            "study_id": "57375967",
            "dicom_id": "d2",
            "image_path": "files/p2/d2.jpg",
            "question": "Is air collection present?",
            "answer": "no",
            "baseline_question": "is there a pneumothorax?",
            "question_variant": "hard_positive_strategy-2",
            "variant_index": 2,
            "strategy": "Synonym replacement",
        },
        # A study-level row with a non-binary reference answer.
        {
            "study_id": "57375967",
            "dicom_id": "",
            "image_path": "",
            "question": "is the pleural effusion bilateral?",
            "answer": "left",
            "baseline_question": "",
            "question_variant": "",
            "variant_index": "",
            "strategy": "",
        },
    ]


def test_read_vqa_table_in_the_reference_format(tmp_path, bank):
    table = read_vqa_table(_write_vqa(tmp_path / "vqa.csv", _reference_rows()), bank)
    assert list(table.columns) == list(QUESTION_COLUMNS)
    by_id = table.set_index("question_id")
    assert table["question_id"].tolist() == [
        "vqa.0",
        "vqa.1",
        "vqa.2",
        "vqa.3",
        "vqa.4",
        "vqa.5.baseline",
        "vqa.5",
        "vqa.6",
    ]
    # Strategies and kinds: ours, with the reference's rewrite description as the kind.
    assert by_id.loc["vqa.0", "strategy"] == "baseline"
    assert by_id.loc["vqa.0", "variant_kind"] == "original"
    assert by_id.loc["vqa.1", "strategy"] == "hard_positive"
    assert by_id.loc["vqa.1", "variant_kind"] == "synonym replacement"
    assert by_id.loc["vqa.2", "variant_index"] == 2
    # Variants link to the nearest baseline row above them for the same image.
    assert by_id.loc[["vqa.1", "vqa.2"], "baseline_question_id"].tolist() == ["vqa.0", "vqa.0"]
    assert by_id.loc["vqa.4", "baseline_question_id"] == "vqa.3"
    # Implicit baseline for a group without its baseline row.
    implicit = by_id.loc["vqa.5.baseline"]
    assert implicit["question"] == "is there a pneumothorax?"
    assert implicit["strategy"] == "baseline" and implicit["variant_index"] == 0
    assert implicit["expected_answer"] == "no" and implicit["dicom_id"] == "d2"
    assert by_id.loc["vqa.5", "baseline_question_id"] == "vqa.5.baseline"
    # Expected answers normalised; the finding comes from the group's baseline question.
    assert by_id.loc["vqa.2", "expected_answer"] == "yes"
    assert by_id.loc["vqa.6", "expected_answer"] == ""
    assert set(by_id.loc[["vqa.0", "vqa.1", "vqa.4"], "finding"]) == {"Cardiomegaly"}
    assert by_id.loc["vqa.5", "finding"] == "Pneumothorax"
    assert by_id.loc["vqa.6", "finding"] == "Pleural Effusion"
    assert by_id.loc["vqa.1", "target_terms"] == "|".join(bank.finding("Cardiomegaly").terms)
    assert by_id.loc["vqa.5", "answer_terms"] == "|".join(bank.finding("Pneumothorax").terms)
    assert by_id.loc["vqa.5", "target_terms"].endswith("|air")
    # A row with only a study id and no baseline question is its own baseline.
    assert by_id.loc["vqa.6", "dicom_id"] == "" and by_id.loc["vqa.6", "study_id"] == "57375967"
    assert by_id.loc["vqa.6", "baseline_question_id"] == "vqa.6"


def test_read_vqa_table_without_bank_leaves_findings_blank(tmp_path):
    table = read_vqa_table(_write_vqa(tmp_path / "vqa.csv", _reference_rows()))
    assert (table["finding"] == "").all() and (table["target_terms"] == "").all()
    assert (table["answer_terms"] == "").all()


def test_read_vqa_table_minimal_columns(tmp_path):
    path = _write_vqa(tmp_path / "vqa.csv", [{"dicom_id": "d1", "question": "Is there edema?"}])
    table = read_vqa_table(path)
    assert table.loc[0, "strategy"] == "baseline"
    assert table.loc[0, "baseline_question_id"] == "vqa.0"
    assert table.loc[0, "expected_answer"] == ""


@pytest.mark.parametrize(
    ("rows", "column"),
    [
        ([{"dicom_id": "d1", "answer": "yes"}], "question"),
        ([{"image_path": "x.jpg", "question": "Is there edema?"}], "dicom_id"),
        (
            [{"dicom_id": "d1", "question": "Is there edema?", "variant_index": "first"}],
            "variant_index",
        ),
    ],
)
def test_read_vqa_table_errors_name_file_and_column(tmp_path, rows, column):
    path = _write_vqa(tmp_path / "vqa.csv", rows)
    with pytest.raises(ConfigError) as caught:
        read_vqa_table(path)
    assert str(path) in str(caught.value) and column in str(caught.value)


def test_read_vqa_table_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_vqa_table(tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("question", "finding"),
    [
        ("is there cardiomegaly in the mediastinal area?", "Cardiomegaly"),
        ("Is the heart size normal?", "Cardiomegaly"),
        ("Is this chest X-ray normal?", "No Finding"),
        ("Are there pleural effusions?", "Pleural Effusion"),
        ("is there hernia?", ""),
        ("Is there fluid?", ""),  # "fluid" is only a related term (edema and effusion)
    ],
)
def test_infer_finding(bank, question, finding):
    assert infer_finding(question, bank) == finding


# --- samples -------------------------------------------------------------------------------------


def _manifest() -> pd.DataFrame:
    labels = {name: [np.nan, np.nan, np.nan] for name in CHEXPERT_FINDINGS}
    labels["Cardiomegaly"] = [1.0, 0.0, -1.0]
    labels["Pneumothorax"] = [np.nan, 1.0, 0.0]
    return pd.DataFrame(
        {
            "dicom_id": ["d1", "d2", "d3"],
            "subject_id": ["10", "10", "11"],
            "study_id": ["50712381", "57375967", "59000000"],
            **labels,
        }
    )


def test_expand_bank_samples_with_label_policies(bank):
    questions = build_question_table(
        bank, findings=["Cardiomegaly", "Pneumothorax"], strategies=["baseline"]
    )
    samples = expand_samples(_manifest(), questions, uncertain="positive", blank="exclude")
    assert list(samples.columns) == list(SAMPLE_COLUMNS)
    assert samples["sample_id"].tolist() == [
        f"{d}__{q}" for d in ("d1", "d2", "d3") for q in questions["question_id"]
    ]
    expected = dict(zip(samples["sample_id"], samples["expected"], strict=True))
    assert expected["d1__cardiomegaly.baseline.0"] == "yes"
    assert expected["d2__cardiomegaly.baseline.0"] == "no"
    assert expected["d3__cardiomegaly.baseline.0"] == "yes"  # U-Ones
    assert expected["d1__pneumothorax.baseline.0"] == ""  # blank excluded
    assert expected["d2__pneumothorax.baseline.0"] == "yes"
    label = dict(zip(samples["sample_id"], samples["label"], strict=True))
    assert label["d3__cardiomegaly.baseline.0"] == -1.0
    assert math.isnan(label["d1__pneumothorax.baseline.0"])

    zeros = expand_samples(_manifest(), questions, uncertain="negative", blank="negative")
    assert zeros.set_index("sample_id").loc["d3__cardiomegaly.baseline.0", "expected"] == "no"
    assert zeros.set_index("sample_id").loc["d1__pneumothorax.baseline.0", "expected"] == "no"


def test_expand_vqa_samples_pair_rows_with_their_images(tmp_path, bank):
    questions = read_vqa_table(_write_vqa(tmp_path / "vqa.csv", _reference_rows()), bank)
    samples = expand_samples(_manifest(), questions, uncertain="exclude", blank="exclude")
    pairs = list(zip(samples["dicom_id"], samples["question_id"], strict=True))
    assert pairs == [
        ("d1", "vqa.0"),
        ("d1", "vqa.1"),
        ("d1", "vqa.2"),
        ("d1", "vqa.3"),
        ("d1", "vqa.4"),
        ("d2", "vqa.5.baseline"),
        ("d2", "vqa.5"),
        ("d2", "vqa.6"),  # vqa.6: by study id
    ]
    by_id = samples.set_index("sample_id")
    # The VQA answer, not the manifest label, is the reference (d2 has Pneumothorax = 1).
    assert by_id.loc["d2__vqa.5", "expected"] == "no" and by_id.loc["d2__vqa.5", "label"] == 0.0
    assert by_id.loc["d2__vqa.6", "expected"] == ""


def test_expand_samples_is_deterministic_and_reads_back_csv_tables(tmp_path, bank):
    questions = build_question_table(bank, findings=["Cardiomegaly"], strategies=STRATEGIES)
    path = tmp_path / "questions.csv"
    questions.to_csv(path, index=False)
    back = pd.read_csv(path)  # blanks come back as NaN
    first = expand_samples(_manifest(), back, uncertain="exclude", blank="exclude")
    second = expand_samples(_manifest(), questions, uncertain="exclude", blank="exclude")
    pd.testing.assert_frame_equal(first, second)


def test_expand_samples_errors(bank):
    questions = build_question_table(bank, findings=["Cardiomegaly"], strategies=["baseline"])
    with pytest.raises(ConfigError, match="Cardiomegaly"):
        expand_samples(
            _manifest().drop(columns="Cardiomegaly"),
            questions,
            uncertain="exclude",
            blank="exclude",
        )
    with pytest.raises(ValueError, match="choose from"):
        expand_samples(_manifest(), questions, uncertain="ones", blank="exclude")


def test_read_vqa_table_numbers_variants_without_an_index_in_file_order(tmp_path):
    baseline = "Is there a pneumothorax?"
    rows = [
        {"dicom_id": "d1", "question": baseline, "baseline_question": baseline},
        {"dicom_id": "d1", "question": "Is a pneumothorax present?", "baseline_question": baseline},
        {
            "dicom_id": "d2",
            "question": "Is air in the pleural space?",
            "baseline_question": baseline,
        },
        {
            "dicom_id": "d1",
            "question": "Is there air in the pleural space?",
            "baseline_question": baseline,
        },
    ]
    table = read_vqa_table(_write_vqa(tmp_path / "vqa.csv", rows)).set_index("question_id")
    assert table.loc[["vqa.1", "vqa.3"], "variant_index"].tolist() == [1, 2]
    assert table.loc[["vqa.1", "vqa.3"], "baseline_question_id"].tolist() == ["vqa.0", "vqa.0"]
    # d2 has no baseline row of its own: an implicit one, not d1's.
    assert table.loc["vqa.2", "baseline_question_id"] == "vqa.2.baseline"
    assert table.loc["vqa.2", "variant_index"] == 1
