"""Knowledge distillation loss of GMP* (Kurtic et al. 2024, guideline 3: h = 1.0, T = 5.5).

Conventions, because implementations disagree on them: the KL term is KL(teacher || student) between
the softmaxes at temperature T, multiplied by T^2 (Hinton et al. 2015, so its gradient scale does not
shrink as 1/T^2), summed over classes and averaged over examples ("batchmean"). Logits are upcast to
float32. With several outputs (SQuAD start and end logits) each loss is the mean over the outputs.
No value of the recipe lives here: h and T are arguments (prune.RECIPES holds the paper's h = 1.0, T = 5.5).
"""
import torch
import torch.nn.functional as F

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t / T) || softmax(s / T)), summed over the last dim, mean over all other dims."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return kl.mean() * (t * t)


def distillation_loss(student_logits, teacher_logits=None, labels=None, *, hardness: float, temperature: float,
                      regression: bool = False) -> torch.Tensor:
    """(1 - h) * task loss + h * kd_loss, each averaged over the outputs when given as tuples.

    The task loss is cross-entropy against integer labels, or mean squared error for a regression head
    (STS-B), where the distillation term is likewise the squared error to the teacher's output (a softmax
    over one output carries no information). With h = 1 the labels are ignored; with h = 0 the teacher is.
    """
    students = student_logits if isinstance(student_logits, (tuple, list)) else (student_logits,)
    loss = students[0].new_zeros((), dtype=torch.float32)
    if hardness < 1.0:
        if labels is None:
            raise ValueError("hardness < 1 needs labels")
        targets = labels if isinstance(labels, (tuple, list)) else (labels,)
        task = [F.mse_loss(s.float().squeeze(-1), y.float()) if regression else F.cross_entropy(s.float(), y)
                for s, y in zip(students, targets)]
        loss = loss + (1.0 - hardness) * torch.stack(task).mean()
    if hardness > 0.0:
        if teacher_logits is None:
            raise ValueError("hardness > 0 needs teacher logits")
        teachers = teacher_logits if isinstance(teacher_logits, (tuple, list)) else (teacher_logits,)
        soft = [F.mse_loss(s.float(), t.float()) if regression else kd_loss(s, t, temperature)
                for s, t in zip(students, teachers)]
        loss = loss + hardness * torch.stack(soft).mean()
    return loss


def top_probability(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of the largest softmax(logits / T) probability: how peaked a teacher is at T (SPEC 1: ~93-99%
    at T = 1, ~3.6% at T = 5.5 over SQuAD's positions, so distilling at T = 1 adds little beyond the label)."""
    return F.softmax(logits.float() / temperature, dim=-1).amax(-1).mean()
