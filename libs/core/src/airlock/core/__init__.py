"""Airlock's shared core: models, lifecycle, topics, settings and the stage runtime."""
