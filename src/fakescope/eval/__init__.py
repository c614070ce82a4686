"""fakescope.eval."""
