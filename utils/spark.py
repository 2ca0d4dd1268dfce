"""One Spark session for every chapter: the cluster's on Databricks, a local one otherwise.

The local session is `local[*]` (or the master named by the `SPARK_MASTER` parameter) with a
persistent Hive metastore and warehouse under the work dir, so tables survive between chapters
and kernel restarts. The UI is off, the driver binds to 127.0.0.1 and Arrow is on.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from utils.env import get_param, is_databricks, work_path

MIN_JAVA = 17
LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


class JavaNotFoundError(RuntimeError):
    """Spark needs a Java runtime that is missing or too old."""


def java_version() -> int | None:
    """Major version of the `java` Spark will start, or None when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home, "bin", "java")) if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major  # "1.8" means 8


def check_java() -> int:
    """Return the Java major version, or raise one clear line saying what to install."""
    version = java_version()
    if version is None:
        raise JavaNotFoundError(
            f"Spark needs Java {MIN_JAVA} or newer and none was found: install OpenJDK {MIN_JAVA} "
            "(apt install openjdk-17-jre-headless, brew install openjdk@17, or "
            "conda env create -f environment.yml) or set JAVA_HOME."
        )
    if version < MIN_JAVA:
        raise JavaNotFoundError(
            f"Spark 4 needs Java {MIN_JAVA} or newer but found Java {version}: install OpenJDK "
            f"{MIN_JAVA} and put it first on PATH or set JAVA_HOME to it."
        )
    return version


def delta_jars() -> list[str]:
    """Delta Lake jars available without a download: in PySpark's jars folder or listed in
    `$DELTA_JARS` (colon-separated). Maven coordinates are never resolved here."""
    import pyspark

    found = glob.glob(str(Path(pyspark.__file__).parent / "jars" / "delta-*.jar"))
    extra = [p for p in os.environ.get("DELTA_JARS", "").split(os.pathsep) if p]
    return found + [p for p in extra if Path(p).exists()]


def _local_builder(master: str, app_name: str):
    from pyspark.sql import SparkSession

    check_java()
    # Python workers must be this interpreter, or UDFs fail with "No module named 'pandas'".
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # never guess a public interface
    warehouse = work_path("spark-warehouse")
    metastore = work_path("metastore")
    cores = os.cpu_count() or 2
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={metastore / 'metastore_db'};create=true",
        )
        # Hive's default is a new, never-deleted /tmp/<session>_resources per session.
        .config("spark.hadoop.hive.downloaded.resources.dir", str(metastore / "resources"))
        .config(
            "spark.driver.extraJavaOptions",
            f"-Dderby.system.home={metastore} -Dlog4j.configurationFile={LOG4J_CONFIG}",
        )
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", get_param("SPARK_DRIVER_MEMORY", "2g"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", str(max(4, 2 * cores)))
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        # Each session (a stream's micro-batches run in a clone) would keep its own listing of
        # a table's files, which a commit by another session leaves stale (reads then fail on
        # a replaced file). Without the cache a table is listed again when it is read.
        .config("spark.sql.filesourceTableRelationCacheSize", "0")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
        .enableHiveSupport()
    )
    jars = delta_jars()
    if jars:
        builder = (
            builder.config("spark.jars", ",".join(jars))
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config(
                "spark.sql.catalog.spark_catalog",
                "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            )
        )
    return builder


def get_spark(master: str | None = None, app_name: str = "mlflow-deployment-notebooks"):
    """The Spark session: the cluster's on Databricks, else a local one (created once).

    `master` is what the chapter's `SPARK_MASTER` parameter says (`local[*]`, or a standalone
    cluster such as `spark://127.0.0.1:7077`); None means the `SPARK_MASTER` environment
    variable or `local[*]`. Asking for another master than the running session's raises
    SparkMasterError: one kernel holds one session.
    """
    from pyspark.sql import SparkSession

    if _batch_session:
        return _batch_session[-1]
    if is_databricks():
        return SparkSession.builder.getOrCreate()
    started_elsewhere = _wait_for_warm_up()
    active = SparkSession.getActiveSession()
    if active is not None:
        return _on_master(active, master)
    # The active session is per thread: in another thread than the one that started it,
    # getOrCreate() returns the running session, whatever master the builder names.
    spark = _local_builder(master or os.environ.get("SPARK_MASTER") or "local[*]",
                           app_name).getOrCreate()
    if started_elsewhere is not None and started_elsewhere.sparkContext is spark.sparkContext:
        _cancel_jobs_on_interrupt(spark)
    else:
        spark.sparkContext.setLogLevel(get_param("SPARK_LOG_LEVEL", "ERROR"))
    return _on_master(spark, master)


def _on_master(spark, master: str | None):
    running = spark.sparkContext.master
    if master is not None and master != running:
        raise SparkMasterError(
            f"This kernel's Spark session runs on {running}, not {master}. Restart the "
            "kernel (or call utils.spark.stop_spark()) before switching SPARK_MASTER."
        )
    return spark


class SparkWarmUp(threading.Thread):
    """Starts the local session and opens its catalog in a background thread
    (`warm_up_spark`); `session` is set when it is done, `error` when it failed."""

    def __init__(self, master: str | None):
        super().__init__(name="spark-warm-up", daemon=True)
        self.master, self.session, self.error = master, None, None

    def run(self) -> None:
        try:
            spark = get_spark(self.master)
            spark.catalog.listDatabases()  # opens the metastore: seconds on a new work dir
            spark.range(1).count()  # the first job pays for code generation
            self.session = spark
        except Exception as error:  # get_spark() in the chapter tries again and raises it
            self.error = error


_warm_ups: list[SparkWarmUp] = []


def warm_up_spark(master: str | None = None) -> SparkWarmUp | None:
    """Start the local Spark session in the background, so a chapter whose first table comes
    after other slow steps (loading models) does not wait for Spark then: the JVM, the catalog
    and the first job take 10-20 s on 2 cores. `get_spark()` waits for the warm-up, then
    returns the same session; when the warm-up failed, it tries again and raises the error
    itself. Nothing to do on Databricks (the cluster's session exists): returns None."""
    if is_databricks():
        return None
    warm_up = SparkWarmUp(master)
    _warm_ups.append(warm_up)
    warm_up.start()
    return warm_up


def _wait_for_warm_up():
    """Join a warm-up in progress (from any thread but its own); the session it made."""
    while _warm_ups and _warm_ups[0] is not threading.current_thread():
        warm_up = _warm_ups[0]
        warm_up.join()
        if _warm_ups and _warm_ups[0] is warm_up:
            _warm_ups.pop(0)
        if warm_up.session is not None:
            return warm_up.session
    return None


def _cancel_jobs_on_interrupt(spark) -> None:
    """What PySpark does for a session started in the main thread, for one started in the
    background: an interrupt (Ctrl-C, a notebook's stop button) cancels the Spark jobs too."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum, frame):
        spark.sparkContext.cancelAllJobs()
        raise KeyboardInterrupt()

    signal.signal(signal.SIGINT, interrupt)


_batch_session: list = []


@contextmanager
def batch_session(batch):
    """Inside a `foreachBatch` function: make `get_spark()` return the micro-batch's own
    session (`batch.sparkSession`). On Spark Connect (serverless, standard access mode) the
    function runs in another Python process, where only that session is valid."""
    _batch_session.append(batch.sparkSession)
    try:
        yield batch.sparkSession
    finally:
        _batch_session.pop()


def cached(frame):
    """`frame.cache()` where the compute supports it, else `frame` as it is: older serverless
    environments refuse to cache DataFrames, and caching only saves a second read here."""
    try:
        return frame.cache()
    except Exception as refused:  # Spark Connect raises at once when persisting is unsupported
        if not is_databricks():
            raise
        print(f"Not cached on this compute ({type(refused).__name__}); reading twice instead.")
        return frame


def spark_master(spark) -> str:
    """Where the session runs: `local[*]`, `spark://...`, or `databricks` (the cluster or
    serverless). Serverless compute is Spark Connect, which has no `sparkContext`."""
    if is_databricks():
        return "databricks"
    return spark.sparkContext.master


def parallelism(spark) -> int | None:
    """Tasks Spark runs at once here (the local cores); None on Databricks, where serverless
    hides it and a cluster can autoscale."""
    if is_databricks():
        return None
    return spark.sparkContext.defaultParallelism


class SparkMasterError(RuntimeError):
    """A session on another master is already running in this process."""


def table_format() -> str:
    """`delta` where the Delta connector is on the classpath (Databricks, or local jars),
    else `parquet`. Every table helper writes in this format."""
    if is_databricks():
        return "delta"
    spark = get_spark()
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return "delta" if "DeltaSparkSessionExtension" in extensions else "parquet"


def stop_spark() -> None:
    """Stop the local session (never the cluster's on Databricks)."""
    from pyspark.sql import SparkSession

    if is_databricks():
        return
    started_elsewhere = _wait_for_warm_up()
    active = SparkSession.getActiveSession() or started_elsewhere
    if active is not None:
        active.stop()


if __name__ == "__main__":  # `python -m utils.spark --check-java`, used by the Makefile
    try:
        print(f"Java {check_java()} found.")
    except JavaNotFoundError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
