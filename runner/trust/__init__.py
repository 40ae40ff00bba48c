"""What a config may make the runner do: exact allow-lists of classes, the one boundary every
job's final config passes, and the check of a command line before Hydra acts on it.
"""
