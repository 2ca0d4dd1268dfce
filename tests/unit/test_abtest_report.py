import pandas as pd
import pytest

from utils.abtest.report import compare_variants, plot_variant_comparison

pytestmark = pytest.mark.unit


@pytest.fixture
def scored():
    return pd.DataFrame(
        {
            "variant": ["champion"] * 4 + ["challenger"] * 2 + ["champion"],
            "model_version": [1, 1, 1, 1, 2, 2, 1],
            "prediction": [1, 0, 0, 1, 1, 1, 0],
            "actual_label": [1, 0, 1, 1, 0, 1, None],
            "latency_ms": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        }
    )


def test_compare_variants_counts_only_labelled_rows(scored):
    comparison = compare_variants(scored)
    champion = comparison.loc[("champion", 1)]
    assert champion["requests"] == 4 and champion["accuracy"] == 0.75
    assert champion["accuracy low"] < 0.75 < champion["accuracy high"]
    challenger = comparison.loc[("challenger", 2)]
    assert challenger["accuracy"] == 0.5 and challenger["predicted churn rate"] == 1.0
    assert challenger["p50 latency ms"] == 6.5


def test_plot_has_three_panels(scored):
    figure = plot_variant_comparison(compare_variants(scored), scored)
    assert len(figure.axes) == 3
