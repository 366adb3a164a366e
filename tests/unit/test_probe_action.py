"""The probe's action plugin: a host the connection never reached is unreachable, not a probe error."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "rigkeeper_probe_action", Path(__file__).resolve().parents[2] / "action_plugins" / "rigkeeper_probe.py")
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)


@pytest.mark.parametrize("res,unreachable", [
    # community.docker's connection to a container that does not exist (the audit_faults ghost host)
    ({"failed": True, "msg": "Module result deserialization failed: No start of json char found",
      "module_stdout": "", "module_stderr": "Error response from daemon: No such container: rk-ghost\n"}, True),
    ({"failed": True, "unreachable": True, "msg": "Failed to connect"}, True),
    ({"failed": True, "module_stdout": "", "module_stderr": "ssh: Could not resolve hostname rig9"}, True),
    # the module ran and failed: the probe's own error
    ({"failed": True, "msg": "nvidia-smi failed", "module_stdout": '{"failed": true}', "module_stderr": ""}, False),
    ({"failed": True, "msg": "MODULE FAILURE", "module_stdout": "", "module_stderr": "Traceback ...\nKeyError: 'x'"}, False),
])
def test_looks_unreachable(res, unreachable):
    assert action.looks_unreachable(res) is unreachable
