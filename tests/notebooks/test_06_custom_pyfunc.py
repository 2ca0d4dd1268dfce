"""Chapter 06 end to end: three custom pyfunc models reload and serve exactly as in memory."""

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter("06_custom_pyfunc", TEXT_EPOCHS=15, DIGITS_EPOCHS=4, MAX_TOKENS=40)


def test_every_model_reloads_identically(result):
    for model in ("wine", "text", "digits"):
        assert result.recorded[f"{model}_reload_max_diff"] < 1e-6, model


def test_served_predictions_equal_local_ones(result):
    for model in ("wine", "text", "digits"):
        assert result.recorded[f"{model}_served_max_diff"] < 1e-6, model


def test_wine_answers_probabilities_and_label_and_enforces_its_signature(result):
    assert result.recorded["wine_output_columns"] == [
        "prob_class_0", "prob_class_1", "prob_class_2", "label"
    ]
    assert result.recorded["wine_bad_type_status"] == 400


def test_models_learned_something(result):
    text = result.recorded["text_metrics"]
    assert min(v for k, v in text.items() if k.startswith("accuracy_")) > 0.8
    assert result.recorded["digits_accuracy"]["digit"] > 0.8


def test_long_text_is_truncated_and_the_answer_says_so(result):
    assert result.recorded["long_text_truncated"] is True
    assert result.recorded["long_text_tokens"] > result.recorded["max_tokens"]


def test_bad_input_gets_clear_errors(result):
    assert "tokenizer_cache" in result.recorded["missing_artifact_error"]
    assert result.recorded["bad_image_statuses"] == {"not base64": 400, "not a PNG": 400}
    assert result.recorded["served_after_bad_input"] == 1


def test_models_are_registered(result):
    assert all(v >= 1 for v in result.recorded["versions"].values())
