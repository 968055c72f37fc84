"""Runtime stage: load graph files, feed spikes, run targets, verify (not built yet)."""
