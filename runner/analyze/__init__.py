"""Looking inside a trained model: `python -m runner.analyze checkpoint=PATH what=<name>` (see __main__)."""
