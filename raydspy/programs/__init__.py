"""Ready DSPy programs, each with its rewards and example data."""
