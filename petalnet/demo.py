"""``petalnet demo``: the main job on built-in data: generate drawn flowers, check every record, train a
head on them and leave a complete run folder (plus a picture of samples and the data summary)."""
from __future__ import annotations

import os

from petalnet.commands import DemoOptions


def demo(out: str, *, image_size: int = 128, epochs: int = 3, seed: int = 0, force: bool = False,
         quiet: bool = False, workers: int | None = None) -> dict:
    DemoOptions(out=out, image_size=image_size, epochs=epochs, seed=seed, force=force, quiet=quiet,
                workers=workers).check()   # before the synthetic data is drawn
    from petalnet.atomic import write_json
    from petalnet.data.discovery import discover
    from petalnet.data.summary import format_summary, open_splits, sample_grid, summarize, verify
    from petalnet.data.synthetic import synthetic_data
    from petalnet.engine import TrainConfig, train
    root = synthetic_data(image_size, seed=seed)
    print(f"synthetic flowers: {root}")
    src = discover(root)
    datasets = open_splits(src)
    summary = summarize(src, datasets)
    verify(datasets, skip_bad=False)
    print(format_summary(src.root, summary))
    result = train(TrainConfig(data=root, out=out, epochs=epochs, seed=seed, force=force, quiet=quiet,
                               workers=workers))
    grid = sample_grid(datasets["train"], os.path.join(out, "train_samples.png"), title="synthetic train")
    write_json({"data": root, **summary}, os.path.join(out, "data.json"))
    print(f"val macro-F1 {result['best_val_macro_f1']:.4f}, accuracy {result['best_val_accuracy']:.4f}; "
          f"run folder {out}: summary.json, history.jsonl, curves.png, lr.png, checkpoints/, {os.path.basename(grid)}")
    return result
