"""Execution targets, one backend each (not built yet)."""
