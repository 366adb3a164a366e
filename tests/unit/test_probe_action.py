"""The probe's action plugin: a host the connection never reached is unreachable, not a probe error."""
import importlib

import pytest

action = importlib.import_module('ansible_collections.rigkeeper.gpu.plugins.action.rigkeeper_probe')


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
