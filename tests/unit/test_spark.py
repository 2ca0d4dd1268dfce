import os

import pytest

from utils import spark as spark_module
from utils.spark import JavaNotFoundError, check_java, get_spark, table_format


def fake_java(tmp_path, version_line):
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return home


@pytest.mark.unit
def test_missing_java_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(JavaNotFoundError) as error:
        check_java()
    assert "\n" not in str(error.value) and "install OpenJDK 17" in str(error.value)


@pytest.mark.unit
def test_old_java_says_which_version_was_found(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'java version "1.8.0_392"')))
    with pytest.raises(JavaNotFoundError, match="found Java 8"):
        check_java()


@pytest.mark.unit
def test_java_17_is_accepted(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "JAVA_HOME", str(fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15'))
    )
    assert check_java() == 17


@pytest.mark.unit
def test_no_delta_jars_here():
    assert spark_module.delta_jars() == []


@pytest.mark.spark
def test_local_session_settings(work_dir):
    spark = get_spark()
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.ui.enabled") == "false"
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert conf.get("spark.sql.warehouse.dir").endswith(str(work_dir / "spark-warehouse"))
    assert conf.get("spark.sql.catalogImplementation") == "hive"
    spark.sql("SHOW DATABASES").collect()
    # Hive's per-session resources folder lands in the work dir, not as litter in /tmp.
    assert (work_dir / "metastore" / "resources").is_dir()
    assert os.environ["PYSPARK_PYTHON"] == spark_module.sys.executable
    assert table_format() == "parquet"
    assert get_spark() is spark


@pytest.mark.spark
def test_the_chapters_master_is_used_or_refused_clearly(work_dir):
    """Regression: `SPARK_MASTER` set in chapter 02's parameters cell had no effect, because
    `get_spark()` only read the environment. The chapter's value now reaches the session, and a
    kernel whose session runs elsewhere says so instead of silently ignoring it."""
    spark = get_spark("local[*]")
    assert spark.sparkContext.master == "local[*]"
    with pytest.raises(spark_module.SparkMasterError, match="not spark://127.0.0.1:7077"):
        get_spark("spark://127.0.0.1:7077")


@pytest.mark.unit
def test_every_spark_chapter_passes_its_spark_master_parameter():
    import json

    from utils.chapters import NOTEBOOKS_DIR

    for name in ["02_batch_inference", "03_streaming_inference",
                 "09_inference_tables_and_retraining", "jobs/score", "jobs/merge_labels",
                 "jobs/retrain"]:  # fmt: skip
        cells = json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text())["cells"]
        parameters = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
        assert 'SPARK_MASTER = get_param("SPARK_MASTER"' in "".join(parameters["source"]), name
        code = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "get_spark(SPARK_MASTER)" in code, name


@pytest.mark.spark
def test_a_warm_up_starts_the_session_get_spark_then_returns(work_dir):
    warm_up = spark_module.warm_up_spark()
    spark = get_spark()  # waits for the warm-up instead of starting a second session
    assert not warm_up.is_alive() and warm_up.error is None
    assert warm_up.session.sparkContext is spark.sparkContext  # one session, not two
    assert spark.range(3).count() == 3
    assert spark_module._warm_ups == []


@pytest.mark.spark
def test_a_failed_warm_up_leaves_get_spark_to_raise_its_own_error(work_dir):
    get_spark("local[*]")
    warm_up = spark_module.warm_up_spark("spark://127.0.0.1:7077")  # another master: refused
    warm_up.join()
    assert isinstance(warm_up.error, spark_module.SparkMasterError) and warm_up.session is None
    assert get_spark().sparkContext.master == "local[*]"
    with pytest.raises(spark_module.SparkMasterError, match="not spark://127.0.0.1:7077"):
        get_spark("spark://127.0.0.1:7077")
