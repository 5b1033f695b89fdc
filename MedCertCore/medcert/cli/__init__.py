"""The ``medcert`` command line."""
