"""Fixtures of the nvidia_driver scenarios; the helpers and fixtures live in driver_helpers.py,
which the driver_* and real_driver scenarios import from here."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from driver_helpers import playbook, rig_name  # noqa: E402,F401
