"""Kill -9 Spark writers mid-write (batch upsert, streaming micro-batch, label merge) and
restart them: every row and label is kept, no key is doubled, nothing is left behind.

One chain of child processes in one work dir (see fault_scenarios.py): each child checks what
the previous, killed one left after recovery, redoes its step as a restarted job would, then
runs the next step with a fault armed. Loopback only; bounded by a timeout per child.
"""

from __future__ import annotations

import pytest

from tests.reliability.fault_scenarios import run_chain

pytestmark = [pytest.mark.slow, pytest.mark.spark]

CASES = [
    ("batch", "point:staged"),  # new files staged, no commit yet
    ("stream", "point:moved"),  # during the swap: one file moved in, the rest not
    ("labels", "write:1"),  # while Spark's job writes the staged files
    ("batch", "point:committed"),  # journal written, nothing applied
    ("labels", "point:applied"),  # files swapped, metastore partitions not yet synced
    ("stream", "cancel:1"),  # a failure raised inside the micro-batch's Spark job
]


def test_every_row_and_label_survives_a_kill_at_each_point(tmp_path):
    results = run_chain(tmp_path / "faults", CASES, timeout=600)
    table = "\n".join(
        f"{r.step:7} {r.fault:16} fired={r.fired} rows_lost={r.rows_lost} "
        f"duplicates={r.duplicate_keys} labels_lost={r.labels_lost} leftovers={r.leftovers}"
        for r in results
    )
    assert all(r.ok for r in results), table
