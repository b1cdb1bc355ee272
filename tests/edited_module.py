"""Run a module's source with one line edited, as a module of its own in the same package:
how a test shows that a change to a constant the code is written for fails at import."""

import types


def run_edited(module, old, new):
    """A new module from `module`'s source with `old` (found exactly once) replaced by
    `new`; what its top level raises propagates."""
    with open(module.__file__) as f:
        source = f.read()
    if source.count(old) != 1:
        raise ValueError(f"{old!r} is not in {module.__file__} once")
    edited = types.ModuleType(module.__name__ + "_edited")
    edited.__package__, edited.__file__ = module.__package__, module.__file__
    exec(compile(source.replace(old, new), module.__file__, "exec"), edited.__dict__)
    return edited
