"""Reproductions of the papers' experiments, each a module with a command behind it."""
