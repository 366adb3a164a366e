"""The facts are gathered two ways, and both must read the host the same way: the gpu_facts role's
task (roles/gpu_facts/tasks/main.yml) and the probe's action plugin (plugins/action/rigkeeper_probe.py,
GPU_FACTS_ARGS, when a role's first task gathers them). An option passed by one and not the other
is lost on every run that gathers through the other (iommu_dir: the simulated IOMMU read as off).
And the simulator inventory's IOMMU directory is the one the simulated kernel and driver use.
"""
import ast
import re
from pathlib import Path

import yaml
from ansible.module_utils.testing import patch_module_args

import nvidia_gpu_facts

REPO = Path(__file__).resolve().parents[2]


def _constants(path, *names):
    """Module-level string constants of a Python file, evaluated without importing it."""
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = eval(compile(ast.Expression(node.value), str(path), 'eval'),
                                                  {'__builtins__': {}}, dict(values))
            except Exception:  # not a constant expression
                continue
    return dict((n, values[n]) for n in names)


def _role_task_args():
    tasks = yaml.safe_load((REPO / 'roles/gpu_facts/tasks/main.yml').read_text())
    (task,) = [t for t in tasks if 'rigkeeper.gpu.nvidia_gpu_facts' in t]
    args = {}
    for option, value in task['rigkeeper.gpu.nvidia_gpu_facts'].items():
        m = re.fullmatch(r'\{\{\s*(\w+)\s*\}\}', str(value))
        assert m, 'gpu_facts passes %s as a plain variable, not %r' % (option, value)
        args[option] = m.group(1)
    return args


def test_the_role_and_the_probe_pass_the_same_options_from_the_same_variables():
    probe_args = _constants(REPO / 'plugins/action/rigkeeper_probe.py', 'GPU_FACTS_ARGS')['GPU_FACTS_ARGS']
    assert probe_args == _role_task_args()
    assert 'iommu_dir' in probe_args


def test_every_option_passed_is_one_the_module_has_and_every_variable_has_a_default():
    with patch_module_args({}):
        spec = nvidia_gpu_facts.build_module().argument_spec
    defaults = yaml.safe_load((REPO / 'roles/gpu_facts/defaults/main.yml').read_text())
    for option, variable in _role_task_args().items():
        assert option in spec, option
        assert variable in defaults, variable


def test_the_sim_inventory_reads_the_iommu_where_the_simulated_kernel_writes_it():
    sim = yaml.safe_load((REPO / 'inventory/sim/group_vars/all/sim.yml').read_text())
    kernel = _constants(REPO / 'tests/sim/image/rootfs/usr/lib/rigkeeper-sim/simkernel.py', 'IOMMU_DIR')
    driver = _constants(REPO / 'tests/sim/pkgsrc/nvsim.py', 'IOMMU_DIR')
    assert sim['rigkeeper_iommu_dir'] == kernel['IOMMU_DIR'] == driver['IOMMU_DIR']
    defaults = (REPO / 'roles/gpu_facts/defaults/main.yml').read_text()
    assert re.search(r"(?m)^gpu_facts_iommu_dir: .*rigkeeper_iommu_dir", defaults)
