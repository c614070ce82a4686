"""Experiments that train: cross-validation and leave-one-source-out, above :mod:`fakescope.train`."""
