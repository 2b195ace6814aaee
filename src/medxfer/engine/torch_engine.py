"""The torch engine: the backbone in PyTorch on any device, channels-last, TF32 off."""

from __future__ import annotations

import torch

from .registry import Engine, register_engine


def torch_forward(backbone, device: torch.device):
    """x (B, 3, S, S) CPU tensor -> (B, d) float32 numpy features in torch on ``device``
    (channels-last; the backbone is moved there).

    On a GPU, cuDNN's TF32 convolutions would move features about 3e-3 of their scale away
    from the CPU's (measured on an H100); each pass runs in full float32 so features are
    comparable across devices (decoding, not the forward pass, bounds a GPU pipeline)."""
    model = backbone.to(device, memory_format=torch.channels_last)

    def forward(x):
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.inference_mode():
                x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                return model(x).float().cpu().numpy()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return forward


register_engine(Engine(
    name="torch", description="PyTorch on the CPU or a GPU (channels-last, TF32 off)",
    installed=lambda: True, load=lambda backbone, device: (lambda threads: torch_forward(backbone, device))))
