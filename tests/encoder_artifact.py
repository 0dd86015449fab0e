"""A small real DynaFLIP encoder artifact for the export / inference tests (tests/test_export_onnx.py,
tests/test_export_tensorrt.py, tests/test_inference_backends.py). A plain module (not a test
module): test files import it by name. INPUT_HW in pixels (H, W); EMBEDDING_DIM: output width.
"""
from __future__ import annotations

from pathlib import Path

from dynaflip_ros.encoder.manifest import EncoderManifest

INPUT_HW = (64, 64)
EMBEDDING_DIM = 32


def make_encoder_dir(path: Path, seed: int = 0) -> EncoderManifest:
    """A small real DynaFLIP encoder artifact (random init, 3 EfficientNet-Lite0 stages, 64x64)."""
    import torch

    from dynaflip_ros.configs.encoder import EncoderConfig, EncoderModelConfig
    from dynaflip_ros.encoder.model import DynaFlipModel, save_encoder

    torch.manual_seed(seed)
    cfg = EncoderConfig(
        model=EncoderModelConfig(
            input_hw=INPUT_HW, trunk_stages=3, embedding_dim=EMBEDDING_DIM, num_keypoints=8, pretrained=False
        )
    )
    model = DynaFlipModel(cfg, imagenet_init=False)
    # Non-trivial BatchNorm statistics, so the exported graph has to carry them correctly.
    with torch.no_grad():
        for m in model.image_encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return save_encoder(path, model, cfg)
