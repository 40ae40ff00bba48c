"""What every layer shares: the bad-input error and atomic file writes. Imports nothing of the project."""
