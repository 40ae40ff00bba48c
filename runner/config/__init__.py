"""What a config means: its typed schema, what each key is (changes the result, per trial, speed,
display), the objective a sweeper is told, and run-name resolvers.
"""
