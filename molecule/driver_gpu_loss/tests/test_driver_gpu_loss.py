"""A GPU that does not come back after a driver change: the run fails, naming it."""
import os

from driver_helpers import family

UPGRADE = os.path.join(os.environ.get("MOLECULE_PROJECT_DIRECTORY", "."), "playbooks", "upgrade_driver.yml")


def gpus(host):
    return host.check_output("nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader").split()


def test_both_gpus_answer_on_the_first_driver(host):
    assert gpus(host) == ["00000000:01:00.0", "00000000:02:00.0"]


def test_the_upgrade_fails_naming_the_gpu_that_did_not_come_back(host, playbook):
    run = playbook({"rigkeeper_distro": "ubuntu"}, name=UPGRADE)
    assert run.returncode != 0
    assert "lists 1 GPU(s), not 00000000:02:00.0 (listed before the change)" in run.output, run.output[-3000:]
    assert "GPU has fallen off the bus" in run.output
    # The driver itself is what was asked for; the card is the problem.
    assert family(host)["nvidia-driver-580-open"][0] == "580.95.05-0ubuntu0.24.04.1"
    assert gpus(host) == ["00000000:01:00.0"]
