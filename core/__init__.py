"""Pieces every stage shares: the error hierarchy, atomic file writes, config handling."""
