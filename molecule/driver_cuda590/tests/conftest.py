"""Fixtures and helpers of the nvidia_driver scenarios (molecule/nvidia_driver/tests)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "nvidia_driver", "tests"))

from driver_helpers import playbook, rig_name  # noqa: E402,F401
