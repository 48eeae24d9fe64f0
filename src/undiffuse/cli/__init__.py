"""The ``undiffuse`` command line: thin wrappers over documented Python functions."""
