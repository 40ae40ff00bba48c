"""One training run, top to bottom: set-up from the config, the training step and the one epoch
loop, compute settings, schedulers, adversarial training, resume, interrupts, a GPU slot.
"""
