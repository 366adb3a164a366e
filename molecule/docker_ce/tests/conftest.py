"""Helpers for the docker_ce verifier: the scenario's converge playbook run again with other
variables (a broken option, a restart-needing option, a swap nobody asked for). The runner is the
driver scenarios' (molecule/nvidia_driver/tests/driver_helpers.py), not a copy of it."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "nvidia_driver", "tests"))

from driver_helpers import playbook  # noqa: E402,F401
