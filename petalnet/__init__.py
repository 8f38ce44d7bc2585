"""petalnet: flower-species classifiers from the "Petals to the Metal" TFRecords, on any accelerator.

Notebook API (``petalnet.api``): ``petalnet.train(data, out, **overrides)`` -> ``Run`` (as ``petalnet
train``: recipe ``auto``; ``resume=True``), ``petalnet.load(run_dir)`` (``.resume()``), ``EarlyStopping``, ``CSVLogger``, ``TensorBoardLogger``. Loaded on first use,
so ``import petalnet`` (and the CLI's ``--help``) imports no torch.
"""
__version__ = "0.1.0"

_API = ("train", "load", "Run", "EarlyStopping", "CSVLogger", "TensorBoardLogger")


def __getattr__(name: str):
    if name in _API:
        from petalnet import api
        return getattr(api, name)
    raise AttributeError(f"module 'petalnet' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
