"""The ``edgeaigc`` command."""
