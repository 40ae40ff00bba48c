"""`python -m runner.analyze checkpoint=PATH what=<name> [split=val|test] [n=N] [out=DIR] [device=auto] ...`

Rebuilds the model and data set from a checkpoint (as runner.eval does) and writes PNG and CSV
files into `<run folder>/analysis/` (or `out=DIR`), printing each path:
  predictions  a 10 x 3 grid of images with true and predicted names, wrong ones in red
               (predictions.png/.csv), and the 5 most confident mistakes (mistakes.png/.csv);
  confusion    the row-normalised confusion matrix (confusion.png, confusion_counts.csv) and
               per-class accuracy (per_class_accuracy.csv), classes sorted by accuracy;
  filters      the first convolution's filters (filters.png/.csv) and one image's activation
               maps at each conv stage (activations.png/.csv; image=INDEX picks it);
  saliency     gradient saliency for n images (saliency.png/.csv); smoothgrad=true adds SmoothGrad
               (samples=25, noise=0.15);
  pgd          accuracy under an L-inf PGD attack at each epsilon (pgd.csv, pgd_accuracy.png) and
               clean vs attacked examples at the largest (pgd_examples.png/.csv). eps=0,1/255,...
               are fractions of the [0, 1] pixel range; steps=10, alpha (default 2.5*eps/steps),
               random_start (default true when steps > 1); steps=1 is FGSM. images=N attacks only
               the split's first N images.
`seed=0` fixes the sampled images and the random starts; `dataset.KEY=VALUE` overrides the stored
data set config, as for runner.eval.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from common.errors import ConfigError, entry_point

USAGE = ("usage: python -m runner.analyze checkpoint=PATH what=predictions|confusion|filters|saliency|pgd "
         "[split=val|test] [n=N] [out=DIR] [device=auto] [seed=0] [eps=0,1/255,...] [steps=10] [alpha=A] "
         "[random_start=true] [images=N] [smoothgrad=false] [image=0] [dataset.KEY=VALUE]")
WHATS = ("predictions", "confusion", "filters", "saliency", "pgd")
DEFAULTS: dict[str, Any] = {"checkpoint": None, "what": None, "split": "val", "n": None, "out": None, "device": "auto",
                            "seed": 0, "eps": "0,1/255,2/255,4/255,8/255", "steps": 10, "alpha": None,
                            "random_start": None, "images": None, "smoothgrad": False, "samples": 25, "noise": 0.15,
                            "image": 0}
INTEGER_KEYS = {"n": 1, "seed": 0, "steps": 1, "images": 1, "samples": 1, "image": 0}  # key: smallest value


def parse_epsilons(text: str) -> list[float]:
    """'0,1/255,0.1' -> [0.0, 0.00392..., 0.1], each checked to lie in [0, 1]."""
    from runner.run.attacks import check_epsilon

    values = []
    for part in str(text).split(","):
        try:
            value = float(Fraction(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"eps={text} is not a list of numbers; use e.g. eps=0,1/255,2/255,0.1") from None
        values.append(check_epsilon(value, "eps"))
    return values


def parse_args(argv: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {**DEFAULTS, "dataset": {}}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument {arg!r} is not KEY=VALUE; {USAGE}")
        if key.startswith("dataset."):
            options["dataset"][key[len("dataset."):]] = yaml.safe_load(value)
        elif key in DEFAULTS:
            options[key] = value
        else:
            raise ConfigError(f"unknown key {key!r}; {USAGE}")
    if not options["checkpoint"]:
        raise ConfigError(f"checkpoint is missing; {USAGE}")
    if not options["what"]:
        raise ConfigError(f"what is missing: add what={'|'.join(WHATS)}")
    if options["what"] not in WHATS:
        raise ConfigError(f"what={options['what']} is not something to look at; use what={'|'.join(WHATS)}")
    for key, smallest in INTEGER_KEYS.items():
        if options[key] is not None:
            try:
                options[key] = int(options[key])
            except ValueError:
                raise ConfigError(f"{key}={options[key]} is not a whole number; e.g. {key}={max(smallest, 1)}") from None
            if options[key] < smallest:
                raise ConfigError(f"{key}={options[key]} is too small; use {key}={smallest} or more")
    for key in ("smoothgrad", "random_start"):
        if isinstance(options[key], str):
            if options[key].lower() not in ("true", "false"):
                raise ConfigError(f"{key}={options[key]} is invalid; use {key}=true or {key}=false")
            options[key] = options[key].lower() == "true"
    for key in ("alpha", "noise"):
        if options[key] is not None:
            try:
                options[key] = float(Fraction(str(options[key])))
            except (ValueError, ZeroDivisionError):
                options[key] = -1.0
            if options[key] <= 0:
                raise ConfigError(f"{key}={arg_value(argv, key)} is invalid; use a positive number, e.g. {key}=0.01")
    options["eps"] = parse_epsilons(options["eps"])
    return options


def arg_value(argv: list[str], key: str) -> str:
    return next((a.partition("=")[2] for a in argv if a.startswith(f"{key}=")), "")


def analyze(options: dict[str, Any]) -> list[Path]:
    """Restore the checkpoint and write what `options['what']` asks for; returns the files written."""
    import torch

    from runner.analyze.views import VIEWS, View
    from runner.eval import require_split, restore

    run = restore(options["checkpoint"], options["device"], options["dataset"])
    split = require_split(run.splits, options["split"])
    names = run.dataset.class_names()
    out = Path(options["out"]) if options["out"] else Path(options["checkpoint"]).parent / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(options["seed"])
    run.model.eval()
    return VIEWS[options["what"]](View(run, split, options["split"], names, options, out))


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        paths = analyze(options)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    with entry_point():  # anything unexpected: one line, the traceback in a file
        sys.exit(main())
