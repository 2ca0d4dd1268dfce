"""A real standalone Spark cluster on this machine: one master and N workers on 127.0.0.1,
started with PySpark's own `spark-class` launcher, for running chapters "beyond one machine".

Point a chapter at it with the `SPARK_MASTER` parameter (`cluster.master_url`). Workers run
this project's Python, so UDFs find pandas and MLflow.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from utils.env import work_path
from utils.processes import BackgroundProcess, ProcessStartError, free_port, start_process
from utils.spark import LOG4J_CONFIG, check_java


class ClusterStartError(RuntimeError):
    """The master or a worker did not come up; the message holds the end of its log."""


@dataclass
class StandaloneCluster:
    master_url: str
    ui_url: str
    log_dir: Path
    processes: list[BackgroundProcess] = field(default_factory=list)

    def alive_workers(self) -> int:
        """Workers the master lists as ALIVE (from its status JSON)."""
        try:
            with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:
                state = json.load(response)
        except OSError:
            return 0
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")

    def stop(self) -> None:
        for process in reversed(self.processes):  # workers first, then the master
            process.stop(timeout=20)
        self.processes.clear()


def _spark_class(*args: str, log: Path, env: dict[str, str]) -> BackgroundProcess:
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    command = [str(spark_home / "bin" / "spark-class"), *args]
    return start_process(command, name=args[0].rsplit(".", 1)[-1], log_path=log, env=env)


def start_cluster(
    workers: int = 2, cores_per_worker: int = 1, memory_per_worker: str = "1g", timeout: float = 90
) -> StandaloneCluster:
    """Start a master and `workers` workers on 127.0.0.1 and wait until all are registered."""
    import pyspark

    check_java()
    log_dir = work_path("cluster")
    spark_home = str(Path(pyspark.__file__).parent)
    env = {
        **os.environ,
        "SPARK_HOME": spark_home,
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(log_dir),
        "SPARK_WORKER_DIR": str(work_path("cluster", "work")),
        "SPARK_DAEMON_JAVA_OPTS": f"-Dlog4j.configurationFile={LOG4J_CONFIG}",
    }
    port, ui_port = free_port(), free_port()
    cluster = StandaloneCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}", log_dir)
    master_log = log_dir / "master.log"
    cluster.processes.append(
        _spark_class(
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
            log=master_log,
            env=env,
        )
    )
    try:
        for index in range(workers):
            cluster.processes.append(
                _spark_class(
                    "org.apache.spark.deploy.worker.Worker",
                    cluster.master_url,
                    "--host",
                    "127.0.0.1",
                    "--cores",
                    str(cores_per_worker),
                    "--memory",
                    memory_per_worker,
                    "--webui-port",
                    str(free_port()),
                    log=log_dir / f"worker-{index}.log",
                    env=env,
                )
            )
        master = cluster.processes[0]
        try:
            master.wait_ready(lambda: cluster.alive_workers() >= workers, timeout, "ready")
        except ProcessStartError as error:
            raise ClusterStartError(f"Standalone cluster did not start: {error}") from None
        dead = [p.name for p in cluster.processes if not p.is_alive()]
        if dead:
            raise ClusterStartError(f"Standalone cluster: {dead} exited; logs in {log_dir}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def standalone_cluster(workers: int = 2, **options):
    """`with standalone_cluster() as cluster:` a running cluster, always stopped afterwards."""
    cluster = start_cluster(workers, **options)
    try:
        yield cluster
    finally:
        cluster.stop()
