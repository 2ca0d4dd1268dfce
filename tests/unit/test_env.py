import pytest

from utils import env
from utils.env import ParameterError, get_param

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_injected():
    env.clear_injected_params()
    yield
    env.clear_injected_params()


class FakeWidgets:
    """Stands in for dbutils.widgets: text() creates a widget, get() fails for unknown ones."""

    def __init__(self, values=None):
        self.values = dict(values or {})

    def text(self, name, default):
        self.values.setdefault(name, default)

    def get(self, name):
        if name not in self.values:
            raise ValueError(f"No input widget named {name} is defined")
        return self.values[name]


class FakeDbutils:
    def __init__(self, values=None):
        self.widgets = FakeWidgets(values)


def test_default_when_nothing_is_set(monkeypatch):
    monkeypatch.delenv("N_ROWS", raising=False)
    assert get_param("N_ROWS", 10_000) == 10_000


def test_environment_variable_is_coerced_to_the_default_type(monkeypatch):
    monkeypatch.setenv("N_ROWS", "2500")
    monkeypatch.setenv("RESET", "false")
    monkeypatch.setenv("RATE", "0.5")
    assert get_param("N_ROWS", 10_000) == 2500
    assert get_param("RESET", True) is False
    assert get_param("RATE", 1.0) == 0.5


def test_injected_value_wins_over_environment(monkeypatch):
    monkeypatch.setenv("N_ROWS", "2500")
    env.inject_params({"N_ROWS": "300"})
    assert get_param("N_ROWS", 10_000) == 300


def test_widget_wins_over_injected_and_environment(monkeypatch):
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    monkeypatch.setattr(env, "databricks_utils", lambda: FakeDbutils({"N_ROWS": "42"}))
    monkeypatch.setenv("N_ROWS", "2500")
    env.inject_params({"N_ROWS": 300})
    assert get_param("N_ROWS", 10_000) == 42


def test_missing_widget_is_created_with_the_default(monkeypatch):
    fake = FakeDbutils()
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    monkeypatch.setattr(env, "databricks_utils", lambda: fake)
    assert get_param("MODEL_NAME", "bank_churn") == "bank_churn"
    assert fake.widgets.values == {"MODEL_NAME": "bank_churn"}


def test_wrong_type_names_the_parameter(monkeypatch):
    monkeypatch.setenv("N_ROWS", "lots")
    with pytest.raises(ParameterError, match="N_ROWS='lots' is not a valid int"):
        get_param("N_ROWS", 10_000)


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("1_000", 5, 1000),
        (3.0, 5, 3),
        ("yes", False, True),
        ('["a", "b"]', ["x"], ["a", "b"]),
        ('{"k": 1}', {}, {"k": 1}),
        (7, "name", "7"),
    ],
)
def test_coerce(value, default, expected):
    assert env.coerce("P", value, default) == expected


@pytest.mark.parametrize(
    ("value", "default"), [("maybe", True), ("2.5", 1), ("[1]", {}), ("x", 1.0)]
)
def test_coerce_rejects(value, default):
    with pytest.raises(ParameterError, match="Parameter P="):
        env.coerce("P", value, default)


def test_work_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv(env.WORK_DIR_ENV, str(tmp_path / "w"))
    assert env.work_dir() == (tmp_path / "w").resolve()
    assert env.work_path("checkpoints", "x").is_dir()
    assert env.work_path("mlflow.db").parent.is_dir()


def test_databricks_detection(monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert not env.is_databricks()
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert env.is_databricks()
