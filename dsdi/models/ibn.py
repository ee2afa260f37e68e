"""SE-IBN-ResNet50: timm's SE-ResNet-50 with IBN-Net's IBN-a blocks (Pan et al., ECCV 2018).

IBN-a (IBN-Net's ``resnet50_ibn_a`` / ``se_resnet50_ibn_a``): in every bottleneck of layer1, layer2 and layer3
the first normalisation after the 1x1 reduction conv (``bn1``) becomes :class:`IBN` — InstanceNorm2d (affine)
on the first half of the channels and BatchNorm2d on the rest. The stem and layer4 keep plain BatchNorm
(instance statistics in the deep layers would discard the appearance cues a classifier needs).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

IBN_LAYERS = ("layer1", "layer2", "layer3")


class IBN(nn.Module):
    """Instance-batch normalisation: (B, C, H, W) -> (B, C, H, W); IN on channels [0, C//2), BN on the rest.

    Attribute names ``IN`` / ``BN`` follow IBN-Net, so its state-dict keys (``...bn1.IN.weight``) match.
    """

    def __init__(self, channels: int, instance_ratio: float = 0.5):
        super().__init__()
        self.half = int(channels * instance_ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        instance_part, batch_part = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(instance_part.contiguous()), self.BN(batch_part.contiguous())), dim=1)

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm2d) -> IBN:
        """An IBN initialised from a (possibly pretrained) BatchNorm2d: its affine parameters go to both
        halves, its running statistics to the BN half."""
        ibn = cls(bn.num_features)
        with torch.no_grad():
            ibn.IN.weight.copy_(bn.weight[: ibn.half])
            ibn.IN.bias.copy_(bn.bias[: ibn.half])
            ibn.BN.weight.copy_(bn.weight[ibn.half :])
            ibn.BN.bias.copy_(bn.bias[ibn.half :])
            ibn.BN.running_mean.copy_(bn.running_mean[ibn.half :])
            ibn.BN.running_var.copy_(bn.running_var[ibn.half :])
        return ibn


def se_ibn_resnet50(num_classes: int = 37, pretrained: bool = False) -> nn.Module:
    """SE-ResNet-50 with IBN-a in layer1..layer3; input (B, 3, H, W) -> logits (B, num_classes).

    ``pretrained=True`` starts from timm's ImageNet SE-ResNet-50 weights, each converted ``bn1`` initialised
    from the pretrained BatchNorm (IBN-Net's own ImageNet weights are not on the timm hub).
    """
    model = timm.create_model("seresnet50", pretrained=pretrained, num_classes=num_classes)
    for layer_name in IBN_LAYERS:
        for block in getattr(model, layer_name):
            block.bn1 = IBN.from_batch_norm(block.bn1)
    return model
