# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""rigkeeper policy filters: a map of filter names to the policy functions, nothing more.

The policy itself (wants + facts -> decisions, or a refusal that says what to do) is pure Python in
``plugins/module_utils/rigkeeper_policy_*.py``, one file per concern, importable and unit-tested
without Ansible: ``_data`` (the table ``POLICY`` and every source it cites), ``_common`` (shared
parsers and ``PolicyError``), ``_driver``, ``_packages``, ``_cuda``, ``_power``, ``_kernel`` and
``_preflight``. Each filter here is one of those functions, wrapped so that its ``PolicyError``
reaches the play as ``AnsibleFilterError`` with the same message.

Inputs follow docs/facts.md: ``nvidia_gpu`` (with its ``gpus`` list) and ``rigkeeper_host``.

Filters (see each function's docstring; the module_utils file it lives in):

================================  ==========================================================
``rk_driver_decision``            driver branch + module flavour for these GPUs
``rk_driver_packages``            package names, pin globs and holds for a branch and source
``rk_module_plan``                DKMS or Canonical's signed precompiled modules (Secure Boot)
``rk_version_on_branch``          is a (Debian) version string on a branch
``rk_cuda_check``                 can this driver (version or branch) run this CUDA
``rk_cuda_packages``              CUDA toolkit package for a CUDA version
``rk_cudnn_packages``             cuDNN packages for a CUDA version and cuDNN major
``rk_power_plan``                 per-GPU power limit, range- and PSU-checked
``rk_iommu_args``                 kernel args for an IOMMU mode on this CPU vendor
``rk_mitigations_args``           kernel args for ``mitigations=off`` (opt-in)
``rk_kernel_args``                the three above merged with free-form extra args
``rk_cmdline_diff``               wanted kernel args vs. the running command line
``rk_preflight_checks``           the preflight findings
``rk_gpu_architecture``           architecture from a product name (fallback)
================================  ==========================================================
"""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError

from ansible_collections.rigkeeper.gpu.plugins.module_utils import (
    rigkeeper_policy_cuda as cuda,
    rigkeeper_policy_driver as driver,
    rigkeeper_policy_kernel as kernel,
    rigkeeper_policy_packages as packages,
    rigkeeper_policy_power as power,
    rigkeeper_policy_preflight as preflight,
)
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_policy_common import PolicyError


def _filter(func):
    """``func`` as a filter: a PolicyError becomes AnsibleFilterError with the same message."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PolicyError as exc:
            raise AnsibleFilterError(str(exc)) from exc
    return wrapper


rk_driver_decision = _filter(driver.rk_driver_decision)
rk_module_plan = _filter(driver.rk_module_plan)
rk_version_on_branch = _filter(driver.rk_version_on_branch)
rk_gpu_architecture = _filter(driver.rk_gpu_architecture)
rk_driver_packages = _filter(packages.rk_driver_packages)
rk_cuda_packages = _filter(packages.rk_cuda_packages)
rk_cudnn_packages = _filter(packages.rk_cudnn_packages)
rk_cuda_check = _filter(cuda.rk_cuda_check)
rk_power_plan = _filter(power.rk_power_plan)
rk_iommu_args = _filter(kernel.rk_iommu_args)
rk_mitigations_args = _filter(kernel.rk_mitigations_args)
rk_kernel_args = _filter(kernel.rk_kernel_args)
rk_cmdline_diff = _filter(kernel.rk_cmdline_diff)
rk_preflight_checks = _filter(preflight.rk_preflight_checks)


class FilterModule(object):
    """rigkeeper policy filters."""

    def filters(self):
        return {
            'rk_driver_decision': rk_driver_decision,
            'rk_driver_packages': rk_driver_packages,
            'rk_module_plan': rk_module_plan,
            'rk_version_on_branch': rk_version_on_branch,
            'rk_cuda_check': rk_cuda_check,
            'rk_cuda_packages': rk_cuda_packages,
            'rk_cudnn_packages': rk_cudnn_packages,
            'rk_power_plan': rk_power_plan,
            'rk_iommu_args': rk_iommu_args,
            'rk_mitigations_args': rk_mitigations_args,
            'rk_kernel_args': rk_kernel_args,
            'rk_cmdline_diff': rk_cmdline_diff,
            'rk_preflight_checks': rk_preflight_checks,
            'rk_gpu_architecture': rk_gpu_architecture,
        }
