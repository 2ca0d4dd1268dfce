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


# The tensor forms chapter 06 sends to the served digits model; the signature is one named
# string input (`image`), so these four fit it and the other two cannot apply.
TENSOR_FORMS_THAT_FIT = [
    "instances, records", "instances, bare values", "inputs, bare list", "inputs, named",
]  # fmt: skip


def test_every_tensor_form_that_fits_the_signature_gives_the_in_process_digits(result):
    forms, expected = result.recorded["tensor_forms"], result.recorded["tensor_expected_digits"]
    assert len(expected) == 8
    for form in TENSOR_FORMS_THAT_FIT:
        assert forms[form]["status"] == 200, (form, forms[form]["message"])
        assert forms[form]["digits"] == expected, form


def test_tensor_forms_that_cannot_apply_get_a_400_saying_why(result):
    forms = result.recorded["tensor_forms"]
    cannot_apply = {"inputs, pixel tensor", "input_data (Azure), named"}
    assert set(forms) == {*TENSOR_FORMS_THAT_FIT, *cannot_apply}
    pixels = forms["inputs, pixel tensor"]
    assert pixels["status"] == 400 and pixels["digits"] is None
    # MLflow casts the numbers to the signature's string type; the model's own check refuses
    assert "Expected base64 PNG text, got list" in pixels["message"]
    azure = forms["input_data (Azure), named"]
    assert azure["status"] == 400 and azure["digits"] is None
    # MLflow names the keys it does accept, so the reader knows what to send instead
    assert "inputs" in azure["message"] and "instances" in azure["message"]
