"""ONNX export of a trained run (``petalnet export``); ``onnx_model.OnnxModel`` runs the result."""
from __future__ import annotations

import json

import torch


def export_onnx(run: str, output: str, opset: int = 17) -> str:
    """Write ``output`` (dynamic batch); preprocessing constants and classes go into its metadata."""
    from petalnet.predict import load_predictor
    from petalnet.atomic import atomic_path
    from petalnet.outputs import refuse_inputs, run_files
    refuse_inputs("--output", output, run_files(run))
    with atomic_path(output, ".onnx") as tmp:
        p = load_predictor(run)
        model = p.model.float().to(memory_format=torch.contiguous_format).eval()
        dummy = torch.zeros(2, 3, p.image_size, p.image_size)
        torch.onnx.export(model, (dummy,), tmp, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
        import onnx
        proto = onnx.load(tmp)
        meta = {"petalnet.image_size": str(p.image_size), "petalnet.mean": json.dumps(list(p.mean)),
                "petalnet.std": json.dumps(list(p.std)), "petalnet.num_classes": str(p.num_classes),
                "petalnet.model_name": p.model_name, "petalnet.input": "NCHW float32, (x/255 - mean) / std",
                "petalnet.tta": p.tta}   # predict and serve apply the run's views to the ONNX model too
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, tmp)
    return output
