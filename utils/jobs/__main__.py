"""`python -m utils.jobs JOB`: run a job of databricks.yml locally, task by task."""

import sys

from utils.jobs.runner import main

sys.exit(main())
