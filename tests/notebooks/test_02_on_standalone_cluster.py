"""Chapter 02 unchanged on a real standalone Spark cluster (a master and two workers)."""

import pytest

from utils.cluster import standalone_cluster

pytestmark = [pytest.mark.notebooks, pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_run(run_chapter):
    with standalone_cluster(workers=2) as cluster:
        assert cluster.alive_workers() == 2
        result = run_chapter(
            "02_batch_inference",
            N_ROWS=1_000,
            COMPARE_ROWS=5_000,
            RAW_TABLE="churn_raw_cluster",
            PREDICTIONS_TABLE="churn_predictions_cluster",
            SPARK_MASTER=cluster.master_url,
        )
        yield cluster, result
    assert not any(p.poll() is None for p in cluster.processes)


def test_chapter_ran_on_the_cluster(cluster_run):
    cluster, result = cluster_run
    assert result.recorded["spark_master"] == cluster.master_url


def test_cluster_results_match_local_expectations(cluster_run):
    _, result = cluster_run
    assert result.recorded["predictions_rows"] == 1_000
    assert result.recorded["duplicate_keys_after_rerun"] == 0
    assert result.recorded["batch_accuracy"] > 0.75
