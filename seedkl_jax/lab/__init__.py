"""The demo's lab, off the main data path: a toy grammar (grammar.py), a trainer for mini seed suites
(trainer.py) and `seedkl demo` itself (demo.py). Nothing in the study pipeline imports it."""
