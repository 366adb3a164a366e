"""Stands in for the pip bootstrap script ansible-test downloads from ci-files.testing.ansible.com
(not reachable from our machines): the same job, done with the interpreter's own ensurepip and then
pip from PyPI.

ansible-test runs ``python get_pip_<version>.py <pip options> pip==<version> [--no-setuptools]
[--no-wheel]`` in an empty virtual environment; tests/collection/test_collection.py puts this file
where ansible-test looks for its cached copy (``~/.ansible/test/cache/get_pip_<version>.py``).
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.run([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'], check=True,
               stdout=subprocess.DEVNULL)
subprocess.run([sys.executable, '-m', 'pip', 'install'] + args, check=True)
