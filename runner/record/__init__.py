"""What a run leaves: its run folder (file names, statuses, summary, metrics, config), its
per-epoch bookkeeping, checkpoints, and the copies sent to experiment trackers.
"""
