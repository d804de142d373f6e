"""``python -m pipelines.cli``: the ``quarry`` command (how a submitted Ray job runs it).

Tested by tests/pipelines/runtime/test_submit_ray.py.
"""

import sys

from pipelines.cli import main

sys.exit(main())
