"""Distillation losses as plain functions of tensors (the configs in `methods` combine them).

- `kd_loss`: Hinton et al. 2015, ``KL(softmax(t/T) || softmax(s/T)) · T²``.
- `hinton_loss`: ``α · kd_loss + (1 - α) · cross_entropy(s, y)``.
- `hint_loss`: FitNets (Romero et al. 2015) mean squared error between an adapted student
  feature and the teacher's.
- `attention_loss`: attention transfer (Zagoruyko & Komodakis 2017) between normalized
  spatial attention maps.
- `embedding_loss`: cosine distance or MSE between embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimkit.core.errors import UnsupportedModelError
from slimkit.training.objective import as_rows, task_loss

__all__ = ["attention_loss", "embedding_loss", "hint_loss", "hinton_loss", "kd_loss", "task_loss"]


def check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    """Raise `UnsupportedModelError` naming both shapes when they differ."""
    if student.shape != teacher.shape:
        raise UnsupportedModelError(
            f"student {what} of shape {tuple(student.shape)} do not match the teacher's {tuple(teacher.shape)}: "
            "the student must produce the same output shape (same classes / embedding size)"
        )


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T)) · T²``, summed over classes, averaged over rows.

    Logits of any leading shape ``(..., C)`` are flattened to rows of ``C`` classes.
    """
    check_same_shape(student, teacher, "logits")
    s = F.log_softmax(as_rows(student) / temperature, dim=-1)
    t = F.log_softmax(as_rows(teacher) / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


def hinton_loss(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor | None, temperature: float, alpha: float
) -> torch.Tensor:
    """``α · kd_loss + (1 - α) · task_loss``; the KD term alone when there are no targets."""
    soft = kd_loss(student, teacher, temperature)
    if target is None:
        return soft
    return alpha * soft + (1 - alpha) * task_loss(student, target)


def _match_spatial(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Resize a feature map ``(N, C, H, W)`` of the student to the teacher's spatial size."""
    if student.dim() == 4 and student.shape[-2:] != teacher.shape[-2:]:
        return F.adaptive_avg_pool2d(student, teacher.shape[-2:])
    return student


def hint_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between an (adapted) student feature and the teacher feature."""
    student = _match_spatial(student, teacher)
    check_same_shape(student, teacher, "hint features")
    return F.mse_loss(student, teacher)


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention ``normalize(mean_c |A_c|^p)`` of ``(N, C, H, W)`` maps, or over the
    hidden size of ``(N, L, D)`` token features; returns ``(N, H·W)`` / ``(N, L)``."""
    if feature.dim() not in (3, 4):
        raise UnsupportedModelError(
            f"attention transfer needs (N, C, H, W) feature maps or (N, L, D) token features, "
            f"got shape {tuple(feature.shape)}"
        )
    reduced = feature.abs().pow(p).mean(dim=1 if feature.dim() == 4 else -1)
    return F.normalize(reduced.flatten(1), dim=1)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Mean squared difference of the normalized attention maps (maps resized to the teacher's)."""
    if student.dim() == 4 and teacher.dim() == 4:
        student = student.abs().pow(p).mean(1, keepdim=True)
        student = _match_spatial(student, teacher).pow(1 / p)
    qs, qt = attention_map(student, p), attention_map(teacher, p)
    check_same_shape(qs, qt, "attention maps")
    return (qs - qt).pow(2).mean()


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """``1 - cosine`` averaged over rows, or the mean squared error (``kind="mse"``)."""
    check_same_shape(student, teacher, "embeddings")
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return (1 - F.cosine_similarity(as_rows(student), as_rows(teacher), dim=-1)).mean()
