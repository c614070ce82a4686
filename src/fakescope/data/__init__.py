"""fakescope.data."""
