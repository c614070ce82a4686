"""Parameter-efficient fine-tuning of a frozen tower: Effort's SVD residuals and LoRA.

Both replace an ``nn.Linear`` by a module whose weight is the frozen original plus a small
trainable part, and both reduce, once trained, to a **low-rank delta** ``W' - W = B @ A`` with
``B [out, k]`` and ``A [k, in]``. That delta is what a tuned detector stores (kilobytes per
layer) and what :mod:`fakescope.embed.deltas` adds to the int8 ONNX graph for inference.

* :class:`SVDResidualLinear` (Effort; Yan et al., "Orthogonal Subspace Decomposition for
  Generalizable AI-Generated Image Detection", ICML 2025). ``W = U S Vᵀ``; the top ``r``
  singular components stay frozen (the pre-trained knowledge), the remaining ``n - r`` are
  trained (Effort keeps ``r = n - 1``: a rank-1 residual per matrix). Two regularisers keep the
  residual honest: :meth:`~SVDResidualLinear.orthogonal_loss` (``[U_r U_res]`` and
  ``[V_r V_res]`` stay orthonormal) and :meth:`~SVDResidualLinear.keep_norm_loss` (the weight's
  Frobenius norm stays what it was). A fused ``qkv`` matrix is decomposed as its three blocks,
  as Effort decomposes the separate q, k and v projections of Hugging Face's CLIP.
* :class:`LoRALinear` (Hu et al., 2021): ``W + (alpha / r) B A`` with ``B`` starting at zero.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

#: Methods by name (the ``method`` of a tuned detector's recipe).
METHODS = ("effort", "lora")


class SVDResidualLinear(nn.Module):
    """A linear layer whose top singular components are frozen and whose residual is trained.

    Args:
        linear: the layer to wrap (its weight and bias are copied, then frozen).
        residual_rank: how many of the smallest singular components are trainable (Effort: 1).
        chunks: split the output rows into this many equal blocks and decompose each on its own
            (3 for a fused ``qkv``).
    """

    def __init__(self, linear: nn.Linear, residual_rank: int = 1, chunks: int = 1) -> None:
        super().__init__()
        out_f, in_f = linear.weight.shape
        if out_f % chunks:
            raise ValueError(f"{out_f} output rows do not split into {chunks} blocks")
        self.in_features, self.out_features, self.chunks = in_f, out_f, chunks
        self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.U_res, self.S_res, self.V_res = (
            nn.ParameterList(),
            nn.ParameterList(),
            nn.ParameterList(),
        )
        mains, frozen = [], []
        w0 = linear.weight.detach().float()
        for block in w0.chunk(chunks, dim=0):
            u, s, vh = torch.linalg.svd(block, full_matrices=False)
            r = max(0, len(s) - int(residual_rank))
            mains.append(u[:, :r] @ torch.diag(s[:r]) @ vh[:r])
            frozen.append((u[:, :r], s[:r], vh[:r]))
            self.U_res.append(nn.Parameter(u[:, r:].clone()))
            self.S_res.append(nn.Parameter(s[r:].clone()))
            self.V_res.append(nn.Parameter(vh[r:].clone()))
        self.register_buffer("weight_main", torch.cat(mains))
        self.register_buffer("orig_fnorm", torch.stack([b.norm() for b in w0.chunk(chunks)]))
        self._frozen = frozen  # U_r, S_r, V_r per block, for the orthogonality loss
        # the residual as it started: the delta is what training made of it
        self._initial = [
            (u.detach().clone(), s.detach().clone(), v.detach().clone())
            for u, s, v in zip(self.U_res, self.S_res, self.V_res, strict=True)
        ]

    def _residuals(self) -> Iterator[torch.Tensor]:
        for u, s, v in zip(self.U_res, self.S_res, self.V_res, strict=True):
            yield u @ torch.diag(s) @ v

    @property
    def weight(self) -> torch.Tensor:
        """The current weight: frozen main part plus the trained residual."""
        return self.weight_main + torch.cat(list(self._residuals()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def orthogonal_loss(self) -> torch.Tensor:
        """``‖[U_r U_res][U_r U_res]ᵀ - I‖ + ‖[V_r; V_res][V_r; V_res]ᵀ - I‖``, halved, summed
        over blocks (Effort's orthogonality constraint)."""
        total = self.weight_main.new_zeros(())
        for (ur, _, vr), ures, vres in zip(self._frozen, self.U_res, self.V_res, strict=True):
            u = torch.cat([ur.to(ures), ures], dim=1)
            v = torch.cat([vr.to(vres), vres], dim=0)
            eye_u = torch.eye(u.shape[1], device=u.device)
            eye_v = torch.eye(v.shape[0], device=v.device)
            total = total + 0.5 * (u.T @ u - eye_u).norm() + 0.5 * (v @ v.T - eye_v).norm()
        return total

    def keep_norm_loss(self) -> torch.Tensor:
        """``|‖W‖²_F - ‖W₀‖²_F|`` per block, summed (Effort's singular-value constraint)."""
        blocks = self.weight.chunk(self.chunks, dim=0)
        now = torch.stack([b.norm() for b in blocks])
        return (now**2 - self.orig_fnorm**2).abs().sum()

    def delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` with ``B @ A == weight - original weight`` (rank ≤ 2 per block for Effort).

        Block ``i``'s columns of ``B`` are zero outside its rows, so the delta stays exact for a
        fused matrix.
        """
        a_parts, b_parts = [], []
        rows = self.out_features // self.chunks
        trained = zip(self.U_res, self.S_res, self.V_res, strict=True)
        for i, ((u, s, v), (u0, s0, v0)) in enumerate(zip(trained, self._initial, strict=True)):
            for bb, aa in ((u.detach() * s.detach(), v.detach()), (-(u0 * s0), v0)):
                full = bb.new_zeros(self.out_features, bb.shape[1])
                full[i * rows : (i + 1) * rows] = bb
                b_parts.append(full)
                a_parts.append(aa)
        return torch.cat(a_parts, dim=0), torch.cat(b_parts, dim=1)


class LoRALinear(nn.Module):
    """``W x + (alpha / rank) B A x``: the frozen layer plus a trained low-rank update.

    Args:
        linear: the layer to wrap (frozen).
        rank: the update's rank.
        alpha: its scale numerator (the update is multiplied by ``alpha / rank``).
    """

    def __init__(self, linear: nn.Linear, rank: int = 8, alpha: float = 16.0) -> None:
        super().__init__()
        out_f, in_f = linear.weight.shape
        self.in_features, self.out_features = in_f, out_f
        self.register_buffer("weight_orig", linear.weight.detach().float().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.scale = float(alpha) / int(rank)
        self.lora_A = nn.Parameter(torch.empty(int(rank), in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, int(rank)))
        nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_orig + self.scale * self.lora_B @ self.lora_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight_orig, self.bias)
        return out + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def delta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` with ``B @ A == weight - original weight``."""
        return self.lora_A.detach().clone(), (self.scale * self.lora_B).detach().clone()


Adapter = SVDResidualLinear | LoRALinear

#: The attention matrices both methods adapt, as timm names them inside a block.
ATTENTION = ("attn.qkv", "attn.proj")


def wrap_block_linears(
    blocks: nn.Module, method: str, rank: int, names: tuple[str, ...] = ATTENTION
) -> dict[str, Adapter]:
    """Replace the named linears of every block in ``blocks`` by adapters; return them by path.

    Everything else in ``blocks`` is frozen. Paths are relative to ``blocks`` (``"3.attn.qkv"``).

    Raises:
        ValueError: an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown tuning method {method!r}; choose from {METHODS}")
    blocks.requires_grad_(False)
    wrapped: dict[str, Adapter] = {}
    for i, block in enumerate(blocks):
        for name in names:
            parent_name, _, attr = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            linear = getattr(parent, attr)
            chunks = 3 if attr == "qkv" else 1
            if method == "effort":
                new: Adapter = SVDResidualLinear(linear, residual_rank=rank, chunks=chunks)
            else:
                new = LoRALinear(linear, rank=rank)
            setattr(parent, attr, new)
            wrapped[f"{i}.{name}"] = new
    return wrapped


def effort_regulariser(adapters: dict[str, Adapter]) -> torch.Tensor:
    """Mean over Effort layers of the orthogonality and norm losses (zero for LoRA)."""
    terms = [
        a.orthogonal_loss() + a.keep_norm_loss()
        for a in adapters.values()
        if isinstance(a, SVDResidualLinear)
    ]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()
