"""Backbones: the paper's four build and run, SE-IBN puts IBN where IBN-Net does, local weights reload exactly."""

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import tiny_checkpoint
from torch import nn

from dsdi.errors import InputError
from dsdi.labels.schema import CLASSES
from dsdi.models.backbones import PAPER_BACKBONES, create_backbone, default_img_size
from dsdi.models.ibn import IBN

TINY = "lcnet_050"


@pytest.mark.parametrize("name", sorted(PAPER_BACKBONES))
def test_paper_backbones_give_37_logits(name):
    """Real forward passes of the full backbones at a small side (HRNet needs sides divisible by 32)."""
    torch.manual_seed(0)
    model = create_backbone(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, len(CLASSES))
    assert torch.isfinite(logits).all()


def test_default_image_sizes_follow_the_paper():
    assert default_img_size("hrnet_w18") == 448
    assert [default_img_size(n) for n in ("resnest50d", "regnety_064", "se_ibn_resnet50", TINY)] == [360] * 4


def test_se_ibn_resnet50_has_ibn_a_exactly_where_ibn_net_puts_it():
    model = create_backbone("se_ibn_resnet50", num_classes=5)
    blocks_per_layer = {"layer1": 3, "layer2": 4, "layer3": 6}  # ResNet-50: 3, 4, 6, 3 bottlenecks
    planes = {"layer1": 64, "layer2": 128, "layer3": 256}
    expected = {f"{layer}.{i}.bn1": planes[layer] for layer, n in blocks_per_layer.items() for i in range(n)}
    ibn_modules = {name: m for name, m in model.named_modules() if isinstance(m, IBN)}
    assert sorted(ibn_modules) == sorted(expected)
    for name, module in ibn_modules.items():
        assert module.IN.num_features == expected[name] // 2 and module.IN.affine
        assert module.BN.num_features == expected[name] - expected[name] // 2
    instance_norms = [n for n, m in model.named_modules() if isinstance(m, nn.InstanceNorm2d)]
    assert sorted(instance_norms) == sorted(f"{name}.IN" for name in expected)
    assert all(isinstance(block.bn1, nn.BatchNorm2d) for block in model.layer4)  # layer4 and stem keep BN
    assert isinstance(model.bn1, nn.BatchNorm2d)
    se_blocks = [n for n, m in model.named_modules() if type(m).__name__ == "SEModule"]
    assert len(se_blocks) == 16  # still an SE-ResNet-50: one SE module per bottleneck


def test_ibn_normalises_halves_like_torch_functional():
    torch.manual_seed(0)
    ibn = IBN(6).train()
    with torch.no_grad():
        for param in ibn.parameters():
            param.uniform_(0.5, 1.5)
    x = torch.randn(4, 6, 5, 7, dtype=torch.float64)
    ibn = ibn.double()
    expected_in = F.instance_norm(x[:, :3], weight=ibn.IN.weight, bias=ibn.IN.bias)
    expected_bn = F.batch_norm(x[:, 3:], None, None, ibn.BN.weight, ibn.BN.bias, training=True)
    torch.testing.assert_close(ibn(x), torch.cat([expected_in, expected_bn], dim=1))


def test_ibn_from_batch_norm_keeps_the_batch_norm_half_in_eval():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    ibn = IBN.from_batch_norm(bn).eval()
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(ibn(x)[:, 4:], bn(x)[:, 4:])
    torch.testing.assert_close(ibn.IN.weight, bn.weight[:4])


def _outputs(model, images):
    with torch.no_grad():
        return model.eval()(images)


def test_weights_from_state_dict_and_checkpoint_reload_exactly(tmp_path):
    trained = tiny_checkpoint(tmp_path / "best.pt", backbone=TINY, jitter=0.01)  # unlike any fresh initialisation
    images = torch.randn(2, 3, 64, 64)
    expected = _outputs(trained, images)

    torch.save(trained.state_dict(), tmp_path / "state.pt")
    ddp_state = {f"module.{key}": value for key, value in trained.state_dict().items()}
    torch.save(ddp_state, tmp_path / "ddp.pt")
    for name in ("state.pt", "best.pt", "ddp.pt"):
        torch.manual_seed(1)
        reloaded = create_backbone(TINY, weights=tmp_path / name)
        torch.testing.assert_close(_outputs(reloaded, images), expected, rtol=0, atol=0)


def test_weights_with_another_head_load_the_backbone_only_and_say_so(tmp_path):
    torch.manual_seed(0)
    trained = create_backbone(TINY, num_classes=10)
    torch.save(trained.state_dict(), tmp_path / "ten.pt")
    with pytest.warns(UserWarning, match="classifier head"):
        model = create_backbone(TINY, num_classes=37, weights=tmp_path / "ten.pt")
    head = model.pretrained_cfg["classifier"]
    for key, value in trained.state_dict().items():
        if not key.startswith(head + "."):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert model.get_classifier().out_features == 37


def test_weights_of_another_backbone_or_not_weights_are_refused(tmp_path):
    torch.save(timm.create_model("mobilenetv3_small_050", num_classes=37).state_dict(), tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other.pt: weights do not fit .*missing keys"):
        create_backbone(TINY, weights=tmp_path / "other.pt")
    (tmp_path / "notes.pt").write_text("not a tensor file")
    with pytest.raises(InputError, match="notes.pt: not a PyTorch state dict"):
        create_backbone(TINY, weights=tmp_path / "notes.pt")
    with pytest.raises(InputError, match="absent.pt: file not found"):
        create_backbone(TINY, weights=tmp_path / "absent.pt")
    with pytest.raises(InputError, match="unknown backbone 'resnet_doesnotexist'"):
        create_backbone("resnet_doesnotexist")


def test_se_ibn_resnet50_refuses_plain_se_resnet50_weights_naming_the_ibn_keys(tmp_path):
    torch.save(timm.create_model("seresnet50", num_classes=37).state_dict(), tmp_path / "seresnet50.pt")
    with pytest.raises(InputError, match=r"seresnet50.pt: weights do not fit .*layer1\.0\.bn1\.IN\.weight"):
        create_backbone("se_ibn_resnet50", weights=tmp_path / "seresnet50.pt")
