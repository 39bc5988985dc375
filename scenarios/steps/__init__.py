"""Step code of the built-in scenario pipelines."""
