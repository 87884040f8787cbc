"""Sub-commands of the ``sdenet`` command line (see :mod:`sdenet.cli`)."""
