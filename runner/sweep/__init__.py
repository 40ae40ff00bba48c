"""Running many jobs: reuse and resume of run folders, replicates, locks, what each job came to,
Hydra callbacks, the Ray launcher and the adapter to Hydra's private API.
"""
