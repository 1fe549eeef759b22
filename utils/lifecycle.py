"""The run lifecycle every trainer shares: start, resume (one policy), save (atomic, ordered), stop, finish.

    run = Run(args, KIND, config)                              # folder lock, device, torchrun, seed, resume check
    model = build(run.config)                                  # the checkpoint's config when resuming
    run.use_data(train_set)                                    # the training set's fingerprint, checked on resume
    state = run.restore(model=model, optimizer=optimizer)      # named objects; returns epoch, step, ...
    for epoch in run.epochs(sampler):                          # re-seeded per epoch, mid-epoch resume included
        stats = train_one_epoch(...)                           # its sums start from run.carried_sums(zeros)
        if stats["interrupted"]: run.save_and_exit(full_state, ..., sums=...)   # SIGINT/SIGTERM
        ...
        run.end_epoch(full_state, epoch, record, files={"best.pth": weights})
    return run.finish(result)

Saving order: an epoch's own files (best.pth, snapshots, the log line) are written before ``checkpoint.pth``, whose
``epoch`` marks the epoch done. A kill anywhere in between leaves checkpoint.pth at the previous epoch, so the
same command redoes that epoch and rewrites its files; nothing claims an epoch whose files are missing.

One run per folder: the main process holds an exclusive ``flock`` on OUTPUT_DIR/.run.lock for its life (the kernel
releases it when the process ends, a crash included); a second run on the folder is refused before it reads or
deletes anything there. ``--eval-only`` writes nothing there and takes no lock. One recipe per run: a resume
compares every argument saved in the checkpoint but those of ``RESUME_MAY_CHANGE``, and the training set's file
list (``utils.datasets.data_record``).
"""
import json
import os
import random
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import numpy as np
import torch

from utils import distributed as dist_utils
from utils.checkpoint import load_checkpoint, plain, save_atomic
from utils.fileio import make_folder, starts_as_ours
from utils.signals import ignore_stop_signals
from utils.precision import amp_dtype
from utils.runlog import RunLog

# What a trainer may have written into its output folder: --overwrite deletes these and nothing else.
RUN_FILES = re.compile(r"^(checkpoint(_epoch\d+)?\.pth|best\.pth|epoch_\d+\.pth|snapshot_epoch\d+\.pth|backbone\.pth|"
                       r"log\.jsonl|curves\.png|snapshots\.png|args\.json|results\.json)$")
RUN_FOLDERS = ("snapshots", "tensorboard")
TEMP_FILE = re.compile(r"^\..+\.(tmp|part)$")  # save_atomic's temporary files
# checkpoint entries that a trainer keeps across a resume (the epoch and the position in it are the Run's own)
RUN_VARIABLES = ("step", "best_metric", "best_epoch", "best_values")
LOCK_FILE = ".run.lock"  # held (flock) by the run using the folder; never deleted (RUN_FILES does not match it)
# The arguments that may differ between a run and its resumption: where it writes, how fast or verbosely it runs,
# what it evaluates or exports besides training, and where initial weights came from (a resume takes the
# checkpoint's). --epochs too: a run may be extended (or ended earlier); its lr schedule then spans the new
# --epochs from the resumed step on. Every other argument (lr, batch size, seed, loss, schedule, weight decay,
# crops, augmentations, optimizer, data paths, amp...) must equal the checkpoint's.
RESUME_MAY_CHANGE = frozenset((
    "output_dir", "resume", "overwrite", "eval_only", "epochs", "workers", "device", "compile", "deterministic",
    "print_freq", "tensorboard", "save_every", "strict", "val_batch_size", "snapshot_epochs", "snapshot_images",
    "save_epochs", "knn_every", "export_only", "export_from", "export_path", "image_cache", "encoder_weights",
    "weights", "backbone"))
_LOCKS = {}  # type: Dict[str, Any]  # folder -> its open lock file, held by this process until it ends


class StopRequest(object):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill) during training: the loop finishes its step, the trainer
    saves a resumable checkpoint and exits with 128 + the signal number. A second signal aborts at once.

    ``requested(i)`` is what the training loop asks after step ``i``; under torchrun the ranks agree through an
    all-reduce (every ``every`` steps, the loop's existing sync points) so that all of them stop at the same step.
    """

    def __init__(self, every: int = 1) -> None:
        self.signum = None  # type: Optional[int]
        self.every = max(1, int(every))
        self._previous = {}  # type: Dict[int, Any]

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.signum = signum
        print("\n{} received: finishing this step, saving a checkpoint, then stopping (send it again to abort)"
              .format(signal.Signals(signum).name), file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def requested(self, step_in_epoch: int, device: Optional[torch.device] = None) -> bool:
        """Whether to stop after this step (the same answer on every rank)."""
        if not dist_utils.is_dist():
            return self.signum is not None
        if step_in_epoch % self.every:
            return False
        flag = torch.tensor([0.0 if self.signum is None else 1.0], device=device)
        dist_utils.all_reduce_sum(flag)
        return bool(flag.item() > 0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def setup_determinism(deterministic: bool) -> None:
    """Pick cudnn autotuning for speed, or deterministic kernels for bit-reproducible runs."""
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


def clear_run_files(folder: Path, temp_only: bool = False) -> None:
    """Delete the files a run wrote into ``folder`` (only names in RUN_FILES / RUN_FOLDERS), or only the temporary
    files an interrupted atomic write left behind."""
    import shutil

    if not folder.is_dir():
        return
    files = [p for p in folder.iterdir() if (p.is_symlink() or p.is_file())
             and (TEMP_FILE.match(p.name) or (not temp_only and RUN_FILES.match(p.name)))]
    folders = [] if temp_only else [p for p in folder.iterdir() if p.name in RUN_FOLDERS and not p.is_symlink()
                                   and p.is_dir()]
    theirs = [p.name for p in files if not p.is_symlink() and not TEMP_FILE.match(p.name) and not starts_as_ours(p)]
    if theirs:  # named as a run names its files, but not one (a user's notes saved as args.json): nothing deleted
        raise SystemExit("error: --overwrite would delete {} in {}, which {} not what a run writes there; move {} "
                         "away first".format(", ".join(theirs), folder, "is" if len(theirs) == 1 else "are",
                                             "it" if len(theirs) == 1 else "them"))
    for path in files:
        path.unlink()
    for path in folders:
        shutil.rmtree(str(path))


def lock_folder(folder: Path) -> None:
    """Take the exclusive, non-blocking ``flock`` on ``folder``/.run.lock for the rest of this process (the kernel
    releases it when the process ends, however it ends); SystemExit when another process holds it. No-op where
    there is no fcntl (Windows) and for a folder this process already holds."""
    import errno

    try:
        import fcntl
    except ImportError:  # Windows: runs are not guarded against sharing a folder
        return
    key = str(folder.resolve())
    if key in _LOCKS:
        return
    handle = open(str(folder / LOCK_FILE), "a")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            print("warning: cannot lock {} ({}): nothing stops another run from using {} at the same time".format(
                folder / LOCK_FILE, exc.strerror, folder), file=sys.stderr)
            return
        raise SystemExit("error: --output-dir {} is in use by another run (it holds {}): wait for that run to end, "
                         "or use another --output-dir".format(folder, folder / LOCK_FILE))
    _LOCKS[key] = handle


def unlock_folder(folder: Path) -> None:
    """Release this process's lock on ``folder`` (a finished run; tests run several in one process)."""
    handle = _LOCKS.pop(str(folder.resolve()), None)
    if handle is not None:
        handle.close()


class Run(object):
    """One training run: output folder, device and process group, seeds, the resume decision, logging, saving.

    A resume needs the checkpoint's model config (minus the ``ignore`` keys that only say where initial weights came
    from; both configs pass through ``canonical`` first), every argument but those of ``RESUME_MAY_CHANGE``, and the
    training set (``use_data``) to equal this command's. The one policy: a checkpoint in OUTPUT_DIR is
    resumed automatically; one that holds another model, recipe or training set is refused (``--overwrite``
    deletes that run's files and starts afresh); ``--resume PATH`` resumes PATH, with the same check; a
    weights-only checkpoint (best.pth) given to ``--resume`` needs the same model only; ``--eval-only`` evaluates
    the checkpoint's own model.
    """

    def __init__(self, args: Any, kind: str, config: Dict[str, Any],
                 ignore: Sequence[str] = (), curve_keys: Sequence[str] = (), title: str = "",
                 canonical: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None) -> None:
        self.args, self.kind = args, kind
        self.out = Path(args.output_dir)
        if args.overwrite and args.resume is not None:
            raise SystemExit("error: --overwrite starts afresh and --resume continues a run: choose one")
        if self.out.exists() and not self.out.is_dir():
            raise SystemExit("error: --output-dir {} exists and is not a folder".format(self.out))
        self.device = dist_utils.resolve_device(args.device)
        self.distributed = dist_utils.init_distributed(self.device)
        self.rank, self.world = dist_utils.get_rank(), dist_utils.get_world_size()
        self.main = self.rank == 0
        setup_determinism(args.deterministic)
        seed_everything(args.seed)
        self.ckpt = None  # type: Optional[Dict[str, Any]]
        self.resume_path = None  # type: Optional[Path]
        self.canonical = canonical or dict
        self.data = None  # type: Optional[Dict[str, Any]]
        self._lock_and_clear()
        self._decide_resume(plain(config), ignore)
        self.config = self.ckpt["model_config"] if self.ckpt is not None else plain(config)
        self.dtype = amp_dtype(self.device, args.amp, cpu=args.cpu_amp)
        self.log = RunLog(self.out, curve_keys, title, enabled=self.main, tensorboard=args.tensorboard)
        self.stop = StopRequest(every=args.print_freq)
        self.start_epoch, self.partial, self.variables = 0, 0, {}  # type: int, int, Dict[str, Any]

    def _lock_and_clear(self) -> None:
        """Make the folder, take its lock (main process; every rank stops when it is taken), then delete the old
        run's files (--overwrite) or an interrupted write's temp files. --eval-only writes nothing: no lock, and
        nothing deleted under a run that may be writing there."""
        refused = None
        if self.main:
            make_folder(self.out)
            if not self.args.eval_only:
                try:
                    lock_folder(self.out)
                except SystemExit as exc:
                    refused = exc
        if self.distributed:
            flag = torch.tensor([0.0 if refused is None else 1.0], device=self.device)
            dist_utils.all_reduce_sum(flag)
            if refused is None and flag.item() > 0:
                refused = SystemExit("error: --output-dir {} is in use by another run".format(self.out))
        if refused is not None:
            dist_utils.cleanup()
            raise refused
        if self.main and not self.args.eval_only:
            clear_run_files(self.out, temp_only=not self.args.overwrite)
        dist_utils.barrier()

    # ------------------------------------------------------------------------------------------------ resume
    def _decide_resume(self, config: Dict[str, Any], ignore: Sequence[str]) -> None:
        args = self.args
        path = Path(args.resume) if args.resume is not None else self.out / "checkpoint.pth"
        if args.resume is None and (args.overwrite or not path.is_file()):
            if args.eval_only:
                raise SystemExit("error: --eval-only needs a checkpoint: pass --resume PATH or an --output-dir "
                                 "holding one")
            return
        ckpt = load_checkpoint(path, expected_kind=self.kind)
        if not args.eval_only:
            diffs = self._differences(ckpt, config, ignore)
            if diffs and args.resume is not None:
                self._refuse("error: --resume {} was trained with other settings than this command: {}. Pass "
                                 "the same flags to resume it".format(path, "; ".join(diffs)))
            if diffs:
                self._refuse("error: {} holds another run ({}); use another --output-dir, the same flags, or "
                                 "--overwrite to delete that run's files and start afresh".format(
                                     self.out, "; ".join(diffs)))
        self.ckpt, self.resume_path = ckpt, path
        saved_epochs = ckpt.get("args", {}).get("epochs")
        if self.main and not args.eval_only and "optimizer" in ckpt and saved_epochs not in (None, args.epochs):
            print("note: {} was started with --epochs {}; it continues to --epochs {}, its lr schedule spanning those "
                  "from the resumed step on".format(path, saved_epochs, args.epochs))

    def _refuse(self, message: str) -> None:
        """SystemExit(message), the folder's lock released first (the same process may start another run)."""
        if self.main and not self.args.eval_only:
            unlock_folder(self.out)
        raise SystemExit(message)

    def _differences(self, ckpt: Dict[str, Any], config: Dict[str, Any], ignore: Sequence[str]) -> list:
        theirs = {k: v for k, v in self.canonical(ckpt["model_config"]).items() if k not in ignore}
        mine = {k: v for k, v in self.canonical(config).items() if k not in ignore}
        diffs = ["model {}: {!r} in the checkpoint, {!r} here".format(k, theirs.get(k), mine.get(k))
                 for k in sorted(set(theirs) | set(mine)) if theirs.get(k) != mine.get(k)]
        if "optimizer" not in ckpt:  # weights only (best.pth): a new run starts from them, with its own recipe
            return diffs
        saved, now = ckpt.get("args", {}), plain(self.args)
        diffs += ["--{}: {!r} in the checkpoint, {!r} here".format(k.replace("_", "-"), saved[k], now[k])
                  for k in sorted(saved) if k in now and k not in RESUME_MAY_CHANGE and saved[k] != now[k]]
        return diffs

    def use_data(self, dataset: torch.utils.data.Dataset) -> None:
        """Record the training set (``utils.datasets.data_record``: folder, generated or not, count, fingerprint of
        its sorted file names) for the checkpoints and results.json; resuming on another set is refused, naming the
        files removed and added (a mid-epoch position means nothing on other data)."""
        from utils.datasets import data_changes, data_record

        self.data = data_record(dataset)
        saved = self.ckpt.get("data") if self.ckpt is not None and "optimizer" in self.ckpt else None
        if isinstance(saved, dict) and saved.get("fingerprint") != self.data["fingerprint"]:
            self._refuse("error: the training data in {} are not those {} was trained on ({}): resume on the "
                             "same data, or start afresh (--overwrite, or another --output-dir)".format(
                                 self.data["root"], self.resume_path, data_changes(saved, self.data)))

    def restore(self, **objects: Any) -> Dict[str, Any]:
        """Load the resumed checkpoint's entries into ``objects`` by name (modules, optimizers, scalers: their
        state_dict; tensors: copied); return the trainer's run variables (step, best...). A checkpoint holding weights
        only (``best.pth``) restores the objects it has and starts at epoch 0."""
        ckpt = self.ckpt
        if ckpt is None:
            return {}
        resumable = "optimizer" in ckpt
        for name in (list(objects) + ["epoch"]) if resumable else ():
            if name not in ckpt:
                raise ValueError("checkpoint {} has no '{}' entry to resume from".format(self.resume_path, name))
        for name, obj in objects.items():
            if name not in ckpt:
                continue
            if torch.is_tensor(obj):
                obj.copy_(ckpt[name].to(obj.device))
            else:
                obj.load_state_dict(ckpt[name])
        if not resumable:
            return {}
        self.variables = {k: ckpt[k] for k in RUN_VARIABLES if k in ckpt}
        if self.resume_path.resolve().parent != self.out.resolve():
            # resumed from another folder: its best.pth is not here, so the best is tracked afresh in this one
            self.variables = {k: v for k, v in self.variables.items() if not k.startswith("best_")}
        self.start_epoch = int(ckpt["epoch"])
        self.partial = int(ckpt.get("partial_steps", 0))  # steps of the next epoch done before a SIGINT/SIGTERM
        self.log.truncate_after(self.start_epoch)
        if self.main:
            print("resumed from {} at epoch {}{}".format(self.resume_path, self.start_epoch, ", step {} of the next"
                                                         .format(self.partial) if self.partial else ""))
        return dict(self.variables)

    # -------------------------------------------------------------------------------------------------- start
    def begin(self, message: str) -> None:
        """Print the start-up line and record the arguments (main process); a fresh run starts a fresh log."""
        if self.main:
            if self.ckpt is None and self.log.path.exists():
                self.log.path.unlink()
            print(message)
            if self.ckpt is None or not (self.out / "args.json").is_file():  # a resumed run keeps its record
                write_json(self.out / "args.json", plain(self.args), "the run's arguments")
        dist_utils.barrier()

    def loader(self, dataset: torch.utils.data.Dataset, batch_size: int, train: bool,
               workers: Optional[int] = None) -> torch.utils.data.DataLoader:
        """Training: shuffled (per-epoch seeded, resumable mid-epoch; equal shards under torchrun), drop_last.
        Evaluation: each rank takes every world-th sample, none padded, so pooled metrics count each once."""
        workers = self.args.workers if workers is None else workers
        generator = None
        if train:
            sampler = dist_utils.train_sampler(dataset, self.args.seed)  # type: Any
            drop_last = len(dataset) // self.world >= batch_size  # a batch of 1 breaks BatchNorm
            dataset = dist_utils.SeededItems(dataset)  # augmentations seeded per sample: exact mid-epoch resume
            # the loader's own seed draws leave torch's global RNG alone, which only the training steps consume
            generator = torch.Generator().manual_seed(self.args.seed)
        else:
            sampler, drop_last = dist_utils.ShardSampler(len(dataset), self.rank, self.world), False
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
            pin_memory=self.device.type == "cuda", generator=generator,
            worker_init_fn=ignore_stop_signals if workers > 0 else None,
            persistent_workers=workers > 0 and not self.args.deterministic)

    def epochs(self, loader: torch.utils.data.DataLoader, first: int = 1) -> Iterator[int]:
        """Epoch numbers still to run (``first`` is the number of the first epoch); before each, torch's RNG and
        the sampler are re-seeded from (seed, epoch); an epoch resumed mid-way skips the batches already trained on
        and continues torch's RNG (dropout, mixup) from where the interrupted run left it."""
        steps = len(loader)
        if self.partial > steps:
            self._refuse("error: {} stopped after step {} of an epoch that has {} steps here: the training data "
                             "or --batch-size changed; resume on the same data, or start afresh (--overwrite, or "
                             "another --output-dir)".format(self.resume_path, self.partial, steps))
        with self.stop:
            for index in range(self.start_epoch, self.args.epochs):
                epoch = index + first
                dist_utils.start_epoch(loader.sampler, self.args.seed, epoch, skip_batches=self.partial,
                                       batch_size=loader.batch_size)
                if self.partial and self.ckpt is not None and "rng_state" in self.ckpt:
                    set_rng_state(self.ckpt["rng_state"], self.device)
                yield epoch
                self.partial = 0

    def carried_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """``sums`` (zeros: the running totals an epoch's logged means divide, e.g. loss sum and step count) plus,
        in an epoch resumed mid-way, the totals of its steps before the stop (``save_and_exit``'s ``sums``), on the
        main process only so that all-reduced they count once: the resumed epoch logs the unbroken run's means."""
        saved = self.ckpt.get("partial_sums") if self.partial and self.ckpt is not None else None
        if self.main and torch.is_tensor(saved) and tuple(saved.shape) == tuple(sums.shape):
            sums += saved.to(sums.device, sums.dtype)
        return sums

    # --------------------------------------------------------------------------------------------------- save
    def save(self, name: str, obj: Any) -> None:
        """Write ``obj`` atomically as OUTPUT_DIR/name (main process only)."""
        if self.main:
            save_atomic(obj, self.out / name)

    def end_epoch(self, state: Dict[str, Any], epoch: int, record: Optional[Dict[str, Any]] = None,
                  files: Optional[Dict[str, Any]] = None) -> None:
        """The epoch's files, then its log line, then checkpoint.pth (and every --save-every epochs a numbered
        copy): the checkpoint that says the epoch is done is written last."""
        if self.main:
            for name, obj in (files or {}).items():
                save_atomic(obj, self.out / name)
            if record is not None:
                self.log.log(record)
            state = dict(state, data=self.data) if self.data is not None else state
            save_atomic(state, self.out / "checkpoint.pth")
            if self.args.save_every > 0 and epoch % self.args.save_every == 0:
                save_atomic(state, self.out / "checkpoint_epoch{:03d}.pth".format(epoch))
        dist_utils.barrier()

    def save_and_exit(self, state: Dict[str, Any], done: int, steps_per_epoch: int,
                      sums: Optional[torch.Tensor] = None) -> None:
        """After SIGINT/SIGTERM: save ``state`` with the position in the epoch (and the epoch's running ``sums``,
        all-reduced, for ``carried_sums``), then exit with 128 + signal."""
        path = self.out / "checkpoint.pth"
        partial = self.partial + done
        extra = {"partial_steps": partial, "rng_state": rng_state(self.device)}  # type: Dict[str, Any]
        if sums is not None:
            extra["partial_sums"] = sums.detach().float().cpu()
        if self.data is not None:
            extra["data"] = self.data
        self.save("checkpoint.pth", dict(state, **extra))
        dist_utils.barrier()
        signum = self.stop.signum if self.stop.signum is not None else signal.SIGTERM
        if self.main:
            print("stopped after step {} of {} of this epoch; checkpoint saved to {}. Run the same command again to "
                  "resume.".format(partial, steps_per_epoch, path), file=sys.stderr, flush=True)
        self.log.close()
        dist_utils.cleanup()
        sys.exit(128 + int(signum))

    def check_finite(self, value: float, epoch: int, what: str = "training loss", hint: str = "") -> None:
        """Stop with a message (the last good checkpoint stays) when ``value`` is NaN or infinite."""
        if value != value or value in (float("inf"), float("-inf")):
            self._refuse("error: the {} became {} in epoch {}; the last good checkpoint {} is kept. {}".format(
                what, value, epoch, self.out / "checkpoint.pth", hint or "Lower --lr, or try --no-amp"))

    def finish(self, result: Dict[str, Any], write: bool = True) -> Dict[str, Any]:
        """Write results.json (main process; not for --eval-only, which prints its JSON), close the log, leave the
        process group; return ``result``."""
        if not write and self.main:
            print(json.dumps(plain(result)))
        if write and self.data is not None:  # where the data came from, recorded at training time
            result = dict(result, data={k: self.data[k] for k in ("root", "generated", "count", "fingerprint")})
        if write and self.main:
            write_json(self.out / "results.json", plain(result), "the run's results")
        self.log.close()
        dist_utils.cleanup()
        if self.main and not self.args.eval_only:
            unlock_folder(self.out)
        return result


def write_json(path: Path, value: Any, what: str) -> None:
    """``value`` as indented JSON at ``path``, written atomically (utils.fileio.write_atomic)."""
    from utils.fileio import write_atomic

    write_atomic(path, lambda f: json.dump(value, f, indent=2), what, text=True)


def rng_state(device: torch.device) -> Dict[str, Any]:
    """torch's CPU RNG state and, on CUDA, this device's: what the rest of an interrupted epoch draws from."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    """Restore ``rng_state``'s states (a CUDA state only on the CUDA device it came from)."""
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def checkpoint_state(kind: str, config: Dict[str, Any], weights: Dict[str, torch.Tensor], args: Any,
                     **entries: Any) -> Dict[str, Any]:
    """A resumable checkpoint: ``make_checkpoint``'s fields plus state_dicts of the objects given by name
    (modules, optimizers, scalers) and plain values (epoch, step, best...)."""
    from utils.checkpoint import make_checkpoint

    return make_checkpoint(kind, config, weights, args, **{
        name: (value.state_dict() if hasattr(value, "state_dict") else value) for name, value in entries.items()})


__all__ = ["RESUME_MAY_CHANGE", "Run", "StopRequest", "checkpoint_state", "clear_run_files", "ignore_stop_signals",
           "seed_everything", "setup_determinism"]
