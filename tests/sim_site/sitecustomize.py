"""The tests' child Python processes (the CLI, the benchmark, the GPU session's
rehearsal) run tests/fast_sim.py's faster simulator too:
tests/conftest.py puts this folder on their PYTHONPATH. It is installed when the
simulator's kernel module is first imported, so a child that never imports it (pip, a
Python without Numba) pays nothing."""

import importlib.abc
import importlib.util
import os
import sys

SIM_KERNEL = "numba.cuda.simulator.kernel"


class _InstallOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != SIM_KERNEL:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            where = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fast_sim.py")
            blocks = importlib.util.spec_from_file_location("fast_sim", where)
            fast_sim = importlib.util.module_from_spec(blocks)
            blocks.loader.exec_module(fast_sim)
            fast_sim.install()

        spec.loader.exec_module = exec_then_install
        return spec


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.meta_path.insert(0, _InstallOnImport())
