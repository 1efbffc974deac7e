"""torch.distributed for training: one process per device, launched by torchrun (DDP).

`torchrun --nproc_per_node N -m core train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `DistContext.from_env()`
then joins the process group (gloo on CPU, NCCL on CUDA). Without torchrun every call is a no-op on one
process, so the training code has a single path.

How the training loop shares work (core.training.train): every rank draws the same global batch (the same seeded
epoch permutation) and takes its own contiguous slice of it; the per-window losses are sums divided by
global counts, so DDP's gradient average equals the single-process gradient of the whole batch; random
choices (mask ratios, the random share of SQA masks) are drawn for the global batch on every rank from the
same generator, after the teacher's scores have been gathered. Hence N processes train as one would, up to
float summation order, and a run may resume with a different N.

The tokenizers (core.training.train_tokenizers) follow the same design without the DDP wrapper: their losses are
already each rank's share of the global loss, so `sum_gradients` adds the ranks' gradients in one
all-reduce; their RVQ codebooks (EMA updates, dead-code resets) take global statistics and rank 0's random
choices (core.model.tokenizer), and `max_difference_from_main` checks that the ranks stayed identical.
"""
from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "cpu") -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        ctx = cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)
        if backend == "nccl":
            torch.cuda.set_device(ctx.local_rank)
        return ctx

    def device(self, device: str) -> str:
        """The device of this rank: cuda:LOCAL_RANK when training on CUDA with several processes."""
        if self.active and str(device).startswith("cuda"):
            return f"cuda:{self.local_rank}"
        return device

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a global batch of n (n must divide evenly)."""
        if n % self.world:
            raise ValueError(f"the batch size ({n}) must be a multiple of the number of processes ({self.world})")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def gather_rows(self, x):
        """Concatenate every rank's rows of x (no gradient), in rank order."""
        if not self.active:
            return x
        import torch
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def gather_rows_with_grad(self, x):
        """As gather_rows, but gradients flow back to the rank that owns each row."""
        if not self.active:
            return x
        import torch
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x.contiguous()))

    def sum(self, x):
        """Sum of a tensor over ranks (no gradient)."""
        if not self.active:
            return x
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    def broadcast(self, x):
        """Rank 0's value of a tensor, on every rank."""
        if self.active:
            import torch.distributed as dist

            dist.broadcast(x, 0)
        return x

    def barrier(self):
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def gather_rows_varying(self, x):
        """As gather_rows, for ranks holding different numbers of rows (padded to the largest for the
        collective, then trimmed), in rank order."""
        if not self.active:
            return x
        import torch
        import torch.distributed as dist

        counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(self.world)]
        dist.all_gather(counts, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
        counts = [int(c) for c in counts]
        padded = x.new_zeros((max(counts), *x.shape[1:]))
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, counts)])

    def gather_objects(self, obj) -> list:
        """Every rank's picklable `obj` (small: log records), in rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum_gradients(self, params) -> None:
        """Sum the gradients of `params` over ranks in one collective (a missing gradient counts as zero).
        Used where each rank's loss is already its share of the global loss, so the sum is the gradient of
        one process on the whole batch."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def broadcast_tensors(self, tensors) -> None:
        """Rank 0's values of these tensors (parameters, buffers), in place on every rank."""
        if self.active:
            import torch

            for t in tensors:
                if t.dtype == torch.bool:   # not every backend broadcasts bool tensors
                    t.data.copy_(self.broadcast(t.data.to(torch.uint8)).bool())
                else:
                    self.broadcast(t.data)

    def max_difference_from_main(self, tensors) -> float:
        """The largest absolute difference between any rank's tensors and rank 0's (0.0: the ranks agree)."""
        if not self.active:
            return 0.0
        import torch
        import torch.distributed as dist

        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
        reference = self.broadcast(flat.clone())
        diff = (flat - reference).abs().max().reshape(1)
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return float(diff)
