"""One function per `what=`: compute, then write its PNGs and the CSVs holding the same data.

Each takes the restored run, the split to look at, the class names and the options, writes into
`out` and returns the paths it wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

from common.errors import ConfigError
from common.io import atomic_write_text
from data.splits import Split
from runner.analyze import compute
from runner.analyze.figures import Cell, confusion_figure, image_grid, robustness_figure, scaled
from runner.eval import Restored
from runner.run.attacks import ATTACK_BATCH, Attack, default_alpha, pgd, predict, robust_accuracy

MAX_MAPS = 16  # activation maps shown per conv stage


@dataclass
class View:
    run: Restored
    split: Split
    split_name: str
    names: list[str]
    options: dict[str, Any]
    out: Path

    def name(self, label: int) -> str:
        return self.names[label] if 0 <= label < len(self.names) else str(label)

    def write_csv(self, frame: pd.DataFrame, filename: str) -> Path:
        path = self.out / filename
        atomic_write_text(path, frame.to_csv(index=False))
        return path

    def n(self, default: int) -> int:
        return min(int(self.options.get("n") or default), len(self.split.labels))


def predictions(v: View) -> list[Path]:
    """A grid of sampled images with true and predicted names (mistakes in red), and the surest mistakes."""
    labels, probs = compute.predict_split(v.run.model, v.split, v.run.normalize)
    confidence, preds = probs.max(1)
    shown = compute.sample_indices(len(labels), v.n(30), v.options["seed"])
    rows = [{"position": k, "index": i, "true": int(labels[i]), "true_name": v.name(int(labels[i])),
             "pred": int(preds[i]), "pred_name": v.name(int(preds[i])), "confidence": float(confidence[i]),
             "wrong": bool(labels[i] != preds[i])} for k, i in enumerate(shown)]
    images = compute.images_at(v.split, shown)
    cells = [Cell(img, f"true: {r['true_name']}\npred: {r['pred_name']}", r["wrong"]) for img, r in zip(images, rows)]
    wrong = sum(r["wrong"] for r in rows)
    paths = [image_grid(cells, min(10, len(cells)), v.out / "predictions.png",
                        f"{v.split_name}: {len(rows)} images, {wrong} wrong (red)"),
             v.write_csv(pd.DataFrame(rows), "predictions.csv")]
    mistakes = torch.nonzero(preds != labels).flatten()
    surest = mistakes[confidence[mistakes].argsort(descending=True)][:5].tolist()
    rows = [{"rank": k + 1, "index": i, "true": int(labels[i]), "true_name": v.name(int(labels[i])),
             "pred": int(preds[i]), "pred_name": v.name(int(preds[i])), "confidence": float(confidence[i])}
            for k, i in enumerate(surest)]
    paths.append(v.write_csv(pd.DataFrame(rows, columns=["rank", "index", "true", "true_name", "pred", "pred_name",
                                                         "confidence"]), "mistakes.csv"))
    if surest:
        cells = [Cell(img, f"true: {r['true_name']}\npred: {r['pred_name']} ({100 * r['confidence']:.0f}%)", True)
                 for img, r in zip(compute.images_at(v.split, surest), rows)]
        paths.append(image_grid(cells, 5, v.out / "mistakes.png",
                                f"the {len(surest)} most confident mistakes of {len(mistakes)}"))
    return paths


def confusion(v: View) -> list[Path]:
    """Row-normalised confusion matrix and per-class accuracy, classes sorted by accuracy (best first)."""
    labels, probs = compute.predict_split(v.run.model, v.split, v.run.normalize)
    classes = max(int(probs.shape[1]), len(v.names))
    counts = compute.confusion_counts(labels, probs.argmax(1), classes)
    totals = counts.sum(1)
    accuracy = [100.0 * counts[c, c] / totals[c] if totals[c] else float("nan") for c in range(classes)]
    present = [c for c in range(classes) if totals[c]]
    order = sorted(present, key=lambda c: (-accuracy[c], c))
    per_class = pd.DataFrame({"class": order, "name": [v.name(c) for c in order],
                              "images": [int(totals[c]) for c in order], "correct": [int(counts[c, c]) for c in order],
                              "accuracy": [accuracy[c] for c in order]})
    normalised = counts[order][:, order] / totals[order][:, None]
    matrix = pd.DataFrame(counts[order][:, order], index=[v.name(c) for c in order],
                          columns=[v.name(c) for c in order])
    overall = 100.0 * per_class["correct"].sum() / per_class["images"].sum()
    matrix_path = v.out / "confusion_counts.csv"
    atomic_write_text(matrix_path, matrix.to_csv(index_label="true\\pred"))
    return [confusion_figure(normalised, [v.name(c) for c in order], v.out / "confusion.png",
                             f"{v.split_name}: accuracy {overall:.2f}%, rows sum to 1, best class first"),
            v.write_csv(per_class, "per_class_accuracy.csv"), matrix_path]


def filters(v: View) -> list[Path]:
    """The first convolution's filters, each scaled to its own range, and one image's maps per conv stage."""
    layers = compute.conv_layers(v.run.model)
    if not layers:
        raise ConfigError(f"what=filters needs a model with a convolution; {v.run.cfg.model._target_} has none: "
                          f"use a conv model's checkpoint (lenet, cnn5, resnet, simplenet...)")
    name, conv = layers[0]
    weights = conv.weight.detach().cpu().float()
    shown = weights if weights.shape[1] in (1, 3) else weights.mean(1, keepdim=True)  # 1 or 3 channels to show
    cells = [Cell(scaled(w), f"{k}") for k, w in enumerate(shown)]
    stats = pd.DataFrame({"filter": range(len(weights)), "min": weights.flatten(1).min(1).values.numpy(),
                          "max": weights.flatten(1).max(1).values.numpy(),
                          "norm": weights.flatten(1).norm(dim=1).numpy()})
    paths = [image_grid(cells, min(len(cells), 16), v.out / "filters.png",
                        f"{name}: {tuple(weights.shape)} ({weights.shape[-1]}x{weights.shape[-2]} filters, "
                        f"each scaled to its own range)"),
             v.write_csv(stats, "filters.csv")]
    index = int(v.options["image"])
    if not 0 <= index < len(v.split.labels):
        raise ConfigError(f"image={index} is not an index of split={v.split_name} (0..{len(v.split.labels) - 1})")
    image = compute.images_at(v.split, [index])[0]
    stages = compute.stage_activations(v.run.model, v.run.normalize, image)
    cols = 1 + min(MAX_MAPS, max(act.shape[0] for _, act in stages))
    cells, rows = [], []
    for stage, (layer, act) in enumerate(stages, 1):
        cells.append(Cell(image, f"image {index}" if stage == 1 else ""))
        shown_maps = scaled(act[:MAX_MAPS])  # one range per stage: which channels fire, even on 1x1 maps
        maps = [Cell(m.numpy(), f"channel {c}", cmap="viridis") for c, m in enumerate(shown_maps)]
        cells += maps + [Cell(None)] * (cols - 1 - len(maps))
        rows.append({"stage": stage, "layer": layer, "channels": act.shape[0], "height": act.shape[1],
                     "width": act.shape[2], "mean": float(act.mean()), "max": float(act.max())})
    label = v.name(int(v.split.labels[index]))
    paths += [image_grid(cells, cols, v.out / "activations.png",
                         f"conv stage outputs for {v.split_name} image {index} (class {label}), "
                         f"first {MAX_MAPS} maps each, one colour scale per stage",
                         row_labels=[f"{r['layer']}\n{r['height']}x{r['width']}" for r in rows]),
              v.write_csv(pd.DataFrame(rows), "activations.csv")]
    return paths


def saliency(v: View) -> list[Path]:
    """Vanilla gradient saliency beside each image (SmoothGrad below it with smoothgrad=true)."""
    shown = compute.sample_indices(len(v.split.labels), v.n(8), v.options["seed"])
    device = v.run.device
    images = compute.images_at(v.split, shown).to(device)
    labels = v.split.labels[torch.tensor(shown, device=v.split.labels.device)].to(device)
    preds = predict(v.run.model, v.run.normalize, images).argmax(1)
    maps = {"saliency": compute.saliency(v.run.model, v.run.normalize, images, labels).cpu()}
    if v.options["smoothgrad"]:
        maps["smoothgrad"] = compute.smoothgrad(v.run.model, v.run.normalize, images, labels,
                                                int(v.options["samples"]), float(v.options["noise"]),
                                                v.options["seed"]).cpu()
    cells = [Cell(img.cpu(), f"true: {v.name(int(t))}\npred: {v.name(int(p))}", bool(t != p))
             for img, t, p in zip(images, labels, preds)]
    for kind, m in maps.items():
        cells += [Cell((one / one.max().clamp_min(1e-30)).numpy(), kind, cmap="hot") for one in m]  # each to its max
    rows = {"index": shown, "true": labels.tolist(), "pred": preds.tolist()}
    for kind, m in maps.items():
        rows[f"{kind}_max"] = m.flatten(1).max(1).values.tolist()
        rows[f"{kind}_mean"] = m.flatten(1).mean(1).tolist()
    title = "|d true-class score / d pixel|, max over channels" + (", SmoothGrad below" if len(maps) > 1 else "")
    return [image_grid(cells, len(shown), v.out / "saliency.png", title,
                       row_labels=["image", *maps]),
            v.write_csv(pd.DataFrame(rows), "saliency.csv")]


def robustness(v: View) -> list[Path]:
    """Accuracy under L-inf PGD at each epsilon; clean and attacked examples at the largest one."""
    o = v.options
    model, normalize, device = v.run.model, v.run.normalize, v.run.device
    steps, alpha = int(o["steps"]), o["alpha"]
    random_start = o["random_start"] if o["random_start"] is not None else steps > 1

    def attack_at(epsilon: float) -> Attack:
        return Attack(epsilon, steps, alpha, random_start)

    limit = int(o["images"]) if o["images"] else len(v.split.labels)
    rows = []
    for epsilon in o["eps"]:
        torch.manual_seed(o["seed"])  # the same random starts for every epsilon
        batches = compute.first_images(v.split.batches(ATTACK_BATCH, shuffle=False, device=device), limit)
        rows.append({"epsilon": epsilon, "epsilon_255": epsilon * 255, "steps": steps,
                     "alpha": default_alpha(epsilon, steps) if alpha is None else alpha, "random_start": random_start,
                     "accuracy": robust_accuracy(model, batches, normalize, attack_at(epsilon)),
                     "images": min(limit, len(v.split.labels))})
    attack = attack_at(0.0).name
    paths = [v.write_csv(pd.DataFrame(rows), "pgd.csv"),
             robustness_figure(list(o["eps"]), [r["accuracy"] for r in rows], v.out / "pgd_accuracy.png",
                               f"{attack} (L-inf) on {v.split_name}, {rows[0]['images']} images")]
    epsilon = max(o["eps"])
    shown = compute.sample_indices(len(v.split.labels), v.n(10), o["seed"])
    images = compute.images_at(v.split, shown).to(device).float()
    labels = v.split.labels[torch.tensor(shown, device=v.split.labels.device)].to(device)
    torch.manual_seed(o["seed"])
    adversarial = pgd(model.eval(), normalize, images, labels, attack_at(epsilon))
    clean_pred = predict(model, normalize, images).argmax(1)
    adv_pred = predict(model, normalize, adversarial).argmax(1)
    delta = adversarial - images
    cells = [Cell(img / 255, f"true: {v.name(int(t))}\npred: {v.name(int(p))}", bool(t != p))
             for img, t, p in zip(images, labels, clean_pred)]
    cells += [Cell(img / 255, f"attacked\npred: {v.name(int(p))}", bool(t != p))
              for img, t, p in zip(adversarial, labels, adv_pred)]
    cells += [Cell(scaled(d), "perturbation\n(stretched)") for d in delta]
    frame = pd.DataFrame({"index": shown, "true": labels.tolist(), "clean_pred": clean_pred.tolist(),
                          "attacked_pred": adv_pred.tolist(), "epsilon": epsilon,
                          "max_change": (delta.abs().flatten(1).max(1).values / 255).tolist()})
    paths += [image_grid(cells, len(shown), v.out / "pgd_examples.png",
                         f"{attack} at epsilon {epsilon:.4g} ({epsilon * 255:.3g}/255); wrong predictions in red",
                         row_labels=["clean", "attacked", "change"]),
              v.write_csv(frame, "pgd_examples.csv")]
    return paths


VIEWS: dict[str, Callable[[View], list[Path]]] = {
    "predictions": predictions, "confusion": confusion, "filters": filters, "saliency": saliency, "pgd": robustness}
