"""The report's faithfulness page: each study table under its reading, the randomisation check
judged on |Spearman|."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from cxr_attention.faithfulness.similarity import map_similarity
from cxr_attention.faithfulness.summary import SUMMARY_COLUMNS, randomisation_summary
from cxr_attention.io import write_csv
from cxr_attention.report.faithfulness import FAITHFULNESS_READING, write_tables_page

BOOT = {"n_boot": 200, "confidence": 0.95, "seed": 0}


class _Tables(HTMLParser):
    """Every table's rows of cell texts, and the paragraphs' text."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.paragraphs: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th", "p"):
            self._text = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._text or []))
        elif tag == "p":
            self.paragraphs.append("".join(self._text or []))
        if tag in ("td", "th", "p"):
            self._text = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


def test_faithfulness_page_shows_the_absolute_spearman_of_a_reversed_map(tmp_path):
    # two patients whose randomised decoder maps are their maps negated: scipy's rho is -1 for
    # each, so a signed mean reads -1 ("less alike than unrelated maps"); by hand |rho| = 1, the
    # original's whole ranking kept, which the page must show
    rng = np.random.default_rng(0)
    rows = []
    for subject in ("1", "2"):
        original = rng.random((16, 16))
        rho, ssim = map_similarity(original, -original)
        assert rho == pytest.approx(spearmanr(original.ravel(), -original.ravel())[0])
        rows.append(["attention", "decoder", 2, 2, rho, ssim, subject])
    randomisation = pd.DataFrame(
        rows,
        columns=[
            *("method", "part", "layers_randomised", "n_layers"),
            *("spearman", "ssim", "subject_id"),
        ],
    )
    paths = [tmp_path / f"{name}.csv" for name in ("faithfulness", "randomisation", "swap")]
    write_csv(pd.DataFrame(columns=SUMMARY_COLUMNS), paths[0])
    write_csv(randomisation_summary(randomisation, **BOOT), paths[1])
    write_csv(pd.DataFrame(columns=["method", "pair"]), paths[2])
    page = write_tables_page(paths, FAITHFULNESS_READING, tmp_path / "page.html", title="F")
    parsed = _Tables()
    parsed.feed(page.read_text(encoding="utf-8"))
    header, row = parsed.tables[0]  # the one table with rows: randomisation
    cells = dict(zip(header, row, strict=True))
    assert float(cells["abs_spearman"]) == pytest.approx(1.0)
    assert float(cells["spearman"]) == pytest.approx(-1.0)  # the direction, shown beside it
    reading = next(p for p in parsed.paragraphs if "layers_randomised" in p)
    assert "falls towards 0 on abs_spearman" in reading and "|Spearman|" in reading
    swap_reading = next(p for p in parsed.paragraphs if "paraphrase null" in p)
    assert "abs_spearman" in swap_reading
