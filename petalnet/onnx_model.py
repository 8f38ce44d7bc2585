"""An exported ONNX model run by onnxruntime, callable like a torch module in petalnet's predict path."""
from __future__ import annotations

import json

import numpy as np
import torch

from petalnet.options import TTA_MODES
from petalnet.errors import PetalnetError


class OnnxModel:
    """Callable like a torch module (NCHW float tensor in, logits tensor out), run by onnxruntime."""

    def __init__(self, path: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise PetalnetError(f"{path}: running ONNX models needs onnxruntime: pip install 'petalnet[onnx]'") from None
        try:
            self.session = ort.InferenceSession(path, providers=ort.get_available_providers())
        except Exception as e:   # onnxruntime raises its own exception types for bad files
            raise PetalnetError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "petalnet.image_size" not in meta:
            raise PetalnetError(f"{path}: not exported by `petalnet export` (no petalnet metadata)")
        self.image_size = int(meta["petalnet.image_size"])
        self.mean, self.std = tuple(json.loads(meta["petalnet.mean"])), tuple(json.loads(meta["petalnet.std"]))
        self.num_classes = int(meta["petalnet.num_classes"])
        self.model_name = meta.get("petalnet.model_name", "onnx")
        self.tta = meta.get("petalnet.tta", "none")   # files exported before the key: no views recorded
        if self.tta not in TTA_MODES:
            raise PetalnetError(f"{path}: metadata petalnet.tta is {self.tta!r}, not {', '.join(TTA_MODES)}")
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input: arr})[0]).to(x.device)   # ensembles on a GPU

    def eval(self):
        return self
