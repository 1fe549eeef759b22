"""One distributed path: torchrun's environment, or a single process. Helpers are no-ops when alone.

NCCL on CUDA, gloo on CPU. Launch with ``torchrun --nproc_per_node=N script.py ...``; several nodes
use torchrun's own ``--nnodes/--node_rank/--rdzv_endpoint`` flags, nothing here changes.
"""
import os
import time

import torch
import torch.distributed as dist


def is_dist() -> bool:
    """True when a process group is up."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank, 0 when not distributed."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Only rank 0 writes files and prints progress."""
    return get_rank() == 0


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> this process's GPU when CUDA is available (LOCAL_RANK under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device {} asked for, but CUDA is not available".format(name))
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device) -> bool:
    """Join torchrun's process group when launched by torchrun; return whether distributed."""
    if is_dist():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    dist.barrier()
    return True


def cleanup() -> None:
    """Tear the process group down (so repeated in-process runs in tests start clean).

    First a barrier, then a pause without the GIL: a gloo worker thread may still be dropping the last collective's
    work, whose tensors Python already let go of, and that needs the GIL. torch (2.4 at least) destroys the gloo
    group holding the GIL (from ``destroy_process_group`` or when the DDP module's reducer is freed) and waits for
    those threads: without the pause a 2-process CPU run hung at exit in 3 of 10 tries, after writing everything."""
    if is_dist():
        dist.barrier()
        time.sleep(0.2)
        dist.destroy_process_group()


def barrier() -> None:
    """Synchronise processes; no-op when alone."""
    if is_dist():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor across processes in place and return it; identity when alone."""
    if is_dist():
        dist.all_reduce(tensor)
    return tensor


class ResumableSampler(torch.utils.data.Sampler):
    """Wraps a shuffling sampler. It yields (index, sample seed) pairs: each sample's augmentation is drawn from a
    seed of (seed, epoch, index) alone (``SeededItems`` applies it), so it does not depend on which worker loads the
    sample or on what was drawn before. ``skip`` indices are dropped at the start of the next pass only, so a run
    stopped mid-epoch (SIGINT/SIGTERM) resumes with the batches it had not seen, in the same shuffled order and
    with the same augmentations."""

    def __init__(self, inner: torch.utils.data.Sampler, seed: int = 0) -> None:
        self.inner, self.skip, self.seed, self.epoch = inner, 0, seed, 0

    def __iter__(self):
        skip, self.skip = self.skip, 0
        it = iter(self.inner)
        for _ in range(skip):
            next(it, None)
        base = (self.seed % 2 ** 31 * 1000003 + self.epoch) * 1000003
        return ((index, (base + index) % 2 ** 63) for index in it)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class SeededItems(torch.utils.data.Dataset):
    """A dataset read with (index, seed) keys (``ResumableSampler``): the item is made under torch's RNG seeded
    with that seed (and the caller's RNG state is left as it was); a plain index reads the dataset as it is."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def train_sampler(dataset: torch.utils.data.Dataset, seed: int) -> ResumableSampler:
    """Shuffling sampler: a DistributedSampler (equal shards, drop_last) under torchrun, else a seeded one."""
    if is_dist():
        return ResumableSampler(torch.utils.data.distributed.DistributedSampler(dataset, seed=seed, drop_last=True),
                                seed)
    return ResumableSampler(torch.utils.data.RandomSampler(dataset, generator=torch.Generator()), seed)


def start_epoch(sampler: torch.utils.data.Sampler, seed: int, epoch: int, skip_batches: int = 0,
                batch_size: int = 1) -> None:
    """Re-seed torch and the sampler from (seed, epoch): a resumed run draws the same shuffles and
    augmentations as the uninterrupted one would. ``skip_batches`` (an epoch interrupted after that many steps)
    drops the batches already trained on from this pass."""
    torch.manual_seed(seed * 1000 + epoch)
    if isinstance(sampler, ResumableSampler):
        sampler.skip = skip_batches * batch_size
        sampler.epoch = epoch
        sampler = sampler.inner
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif getattr(sampler, "generator", None) is not None:
        sampler.generator.manual_seed(seed * 1000 + epoch)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """SyncBatchNorm (GPU only: PyTorch's runs on GPUs) and DistributedDataParallel; identity when alone."""
    if not is_dist():
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


class ShardSampler(torch.utils.data.Sampler):
    """Every rank takes indices rank, rank+W, ...: no padding, so pooled metrics count each image once."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside torch.compile and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
