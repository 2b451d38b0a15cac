"""hkdviz.evaluation.statistics on known answers (the block summaries are tested with their benchmarks in
test_evaluate.py)."""
import math

import pytest

from hkdviz.evaluation.statistics import label, paired_summary, standard_error


def test_standard_error_of_known_values():
    # 1, 2, 3, 4: sample variance 5/3, so the standard error is sqrt(5/3 / 4).
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 12))
    assert standard_error((value for value in [2.0, 2.0])) == 0.0  # any iterable
    assert math.isnan(standard_error([7.0])) and math.isnan(standard_error([]))


def test_paired_summary_counts_the_negative_differences():
    summary = paired_summary([-3.0, -1.0, 1.0, -1.0], lower_key="hkd_lower_in")
    assert summary == {"mean": -1.0, "standard_error": pytest.approx(math.sqrt((8 / 3) / 4)), "hkd_lower_in": 3,
                       "blocks": 4}
    assert paired_summary([0.0, 0.0])["lower_in"] == 0  # a tie is not lower


def test_labels_of_evaluation_rows():
    assert label({"method": "HKD (one step)", "nfe": 1}) == "HKD 1 NFE"
    assert label({"method": "teacher (Heun)", "nfe": 15}) == "teacher 15 NFE"
    assert label({"method": "held-out data", "nfe": None}) == "held-out data"
