"""An exhaustive, bounded, explicit-state checker of the protocol-version-2 Lua scripts.

``explorer.py`` is the engine (run it with ``python -m tests.checker.explorer``);
``test_checker.py`` runs it at the CI bound and against mutated scripts.
"""
