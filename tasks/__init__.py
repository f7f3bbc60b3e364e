"""Prefect tasks: thin wrappers over the `solar` library, one per stage kind."""
