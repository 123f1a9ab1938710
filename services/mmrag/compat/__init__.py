"""Process-wide fixes for the CPU install profile (see :mod:`mmrag.compat.torch_compat`)."""
