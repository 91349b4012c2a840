"""Task families and the built-in scenario files."""
