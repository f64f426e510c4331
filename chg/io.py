"""Files written atomically: a reader never sees half a file, a killed writer leaves the old one; a training run's
checkpoint (:class:`RunCheckpoint`).

Every file the library writes (:meth:`chg.Values.save`, :meth:`chg.Values.to_csv`, the reports of
:mod:`chg.report`, ``chg value``'s outputs) goes through :func:`atomic_write`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np
import torch

__all__ = ["atomic_write", "write_text_atomic", "write_csv_atomic", "write_json_atomic", "RunCheckpoint",
           "CheckpointError", "data_fingerprint", "model_signature", "check_state", "loss_record"]


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.

    Args:
        path: the file to (re)write; its folder is created. write: a function that writes the whole file to the
            temporary path it is given (a ``str`` in the same folder).
    Returns:
        None.
    Raises:
        Exception: whatever ``write`` or the file system raises (``OSError``, ...), after removing the temporary
            file; ``path`` is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`).

    Args:
        path: the file. text: its whole content.
    """
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_csv_atomic(path, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically, floats with 17 significant digits (they read back exactly).

    Args:
        path: the file. frame: the DataFrame (written without its index).
    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.17g"))
    return path


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (:func:`atomic_write`, fsync'ed).

    Args:
        path: the file. obj: a JSON-able object; non-JSON values are written as ``str``.
    """
    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
    atomic_write(path, write)


# ---- checkpoints: a valuer's, a training run's ---------------------------------------------------------------------
def loss_record(weight, label_smoothing) -> tuple:
    """A valuer's loss as plain numbers, as its checkpoint keeps it.

    Args:
        weight: class weights (a tensor, array or list) or None. label_smoothing: a number.
    Returns:
        ``(weights as a list of floats or None, label smoothing as a float)``.
    """
    w = None if weight is None else [float(v) for v in np.asarray(
        weight.detach().cpu() if isinstance(weight, torch.Tensor) else weight, dtype=np.float64)]
    return w, float(label_smoothing)


def check_state(state: dict, valuer, options: tuple, players: Optional[int] = -1, unit: str = "rows") -> list:
    """The one rule of a valuer's checkpoint (``load_state_dict`` of :class:`EpochValuer`,
    :class:`chg.streaming.StreamingValuer` and :class:`chg.sequence.SequenceValuer`): it is of a valuer of the same
    n, options, loss and skip_epochs, and holds one value per player in each epoch.

    Args:
        state: the checkpoint's dict. valuer: the valuer loading it (its ``n`` and ``skip_epochs``; ``weight`` and
            ``label_smoothing`` where it has them, else plain cross-entropy). options: the valuer's options as its
            ``state_dict`` writes them. players: values per epoch (-1: ``valuer.n``; None: unknown, so any epoch
            is refused). unit: what a player is, for the messages (``"rows"``, ``"sequences"``, ``"tokens"``).
    Returns:
        the checkpoint's epoch values, copied (a list of (players,) float64 tensors).
    Raises:
        ValueError: naming what differs; an epoch's values of another length than ``players``.
    """
    if state["n"] != valuer.n or tuple(state["options"]) != tuple(options):
        raise ValueError(f"load_state_dict: the checkpoint is of a valuer with other n or options (n={state['n']}, "
                         f"options={tuple(state['options'])}; this one: n={valuer.n}, options={tuple(options)})")
    theirs = tuple(state.get("loss", (None, 0.0)))
    mine = loss_record(getattr(valuer, "weight", None), getattr(valuer, "label_smoothing", 0.0))
    if theirs != mine:
        raise ValueError(f"load_state_dict: the checkpoint's epochs were valued under another loss (weight="
                         f"{theirs[0]}, label_smoothing={theirs[1]}) than this valuer's (weight={mine[0]}, "
                         f"label_smoothing={mine[1]}): averaging them would mix two games")
    if state.get("skip_epochs", 0) != valuer.skip_epochs:
        raise ValueError(f"load_state_dict: the checkpoint is of a valuer with skip_epochs="
                         f"{state.get('skip_epochs', 0)}, this one has skip_epochs={valuer.skip_epochs}")
    players = valuer.n if players == -1 else players
    for k, v in enumerate(state["epoch_values"]):
        if not isinstance(v, torch.Tensor) or players is None or tuple(v.shape) != (players,):
            got = f"{v.shape[0]} values" if isinstance(v, torch.Tensor) and v.ndim == 1 else \
                f"a {type(v).__name__} of shape {tuple(getattr(v, 'shape', ()))}"
            has = "no record of its players" if players is None else f"{players} {unit} (one value each)"
            raise ValueError(f"load_state_dict: epoch {k} of the checkpoint holds {got}, but this valuer has {has}: "
                             "the checkpoint is damaged or of another data set")
    return [v.clone() for v in state["epoch_values"]]


# ---- a training run's checkpoint --------------------------------------------------------------------------------
RUN_FORMAT = "chg.io.RunCheckpoint/1"  # the "format" entry of the file


class CheckpointError(ValueError):
    """A run's checkpoint file that cannot resume this run (:meth:`RunCheckpoint.resume`)."""


def _digest(h, v) -> None:
    """Feed ``v`` (tensors, arrays, numbers, strings, and dicts / tuples / lists of them) into the hash ``h``."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        h.update(f"T{v.dtype}{tuple(v.shape)}".encode())
        h.update((v.view(torch.uint8) if v.dtype == torch.bool else v).contiguous().view(-1).view(torch.uint8)
                 .numpy().tobytes() if v.numel() else b"")
    elif isinstance(v, np.ndarray):
        h.update(f"A{v.dtype}{v.shape}".encode())
        h.update(np.ascontiguousarray(v).tobytes() if v.dtype != object else repr(v.tolist()).encode())
    elif isinstance(v, Mapping):
        for k in sorted(v, key=str):
            h.update(f"K{k!r}".encode())
            _digest(h, v[k])
    elif isinstance(v, (tuple, list)):
        h.update(f"L{len(v)}".encode())
        for x in v:
            _digest(h, x)
    else:
        h.update(f"S{type(v).__name__}{v!r}".encode())


STABLE_ROWS = 16  # rows read twice to tell a data set whose reads are random (a flip at p = 0.5 escapes 2⁻¹⁶)


def _random_states() -> dict:
    """torch's (CPU, and CUDA when in use), NumPy's and Python's global random states, as ``torch.load`` reads them
    weights-only (NumPy's keys as an int64 tensor, Python's state a tuple of ints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {"rng": torch.get_rng_state(),
            "numpy_rng": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python_rng": (version, tuple(internal), py_gauss),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}


def _set_random_states(states: dict) -> None:
    """Restore what :func:`_random_states` returned (a file without NumPy's and Python's states: torch's only)."""
    torch.set_rng_state(states["rng"])
    if states.get("numpy_rng") is not None:
        kind, keys, pos, has_gauss, gauss = states["numpy_rng"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
        random.setstate(states["python_rng"])
    if states.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda_rng"])


class _RandomStateKept:
    """Within it, reads of a data set (random transforms) leave torch's, NumPy's and Python's global random state as
    they were — a fingerprint does not change what training draws — and :meth:`reseed` sets the CPU ones to one
    fixed seed, so that a transform drawing from them reads the same every time."""

    def __enter__(self):
        self._states = _random_states()
        return self

    @staticmethod
    def reseed() -> None:
        torch.default_generator.manual_seed(0)
        np.random.seed(0)
        random.seed(0)

    def __exit__(self, *exc):
        _set_random_states(self._states)
        return False


def data_fingerprint(dataset) -> Optional[str]:
    """What identifies a training set in a run's checkpoint: a hash of its length and of every row — a
    ``TensorDataset``'s tensors' bytes, or each item ``dataset[i]`` read once (a read of the data set, without the
    model). The rows are read with torch's (CPU), NumPy's and Python's global random generators set to one fixed seed
    — a random transform drawing from them (torchvision's do) reads the same in every run — and those generators are
    left as they were.

    Args:
        dataset: a map-style data set (``len`` and ``[i]``).
    Returns:
        a hex string (BLAKE2b, 16 bytes); None when the first rows (``STABLE_ROWS``) read differently twice under the
        same seed (a data set with a random generator of its own), so that its rows cannot identify it.
    """
    h = hashlib.blake2b(digest_size=16)
    n = len(dataset)
    h.update(f"n{n}".encode())
    if isinstance(dataset, torch.utils.data.TensorDataset):
        for t in dataset.tensors:
            _digest(h, t)
        return h.hexdigest()
    with _RandomStateKept() as rng:
        reads = []
        for _ in range(2):  # the first rows twice, under the same seed: a generator of the data set's own shows
            rng.reseed()
            h2 = hashlib.blake2b(digest_size=16)
            for i in range(min(n, STABLE_ROWS)):
                _digest(h2, dataset[i])
            reads.append(h2.digest())
        if reads[0] != reads[1]:
            return None
        rng.reseed()
        for i in range(n):
            _digest(h, dataset[i])
    return h.hexdigest()


def model_signature(model) -> dict:
    """What a run's checkpoint records of its model, to tell another model: its printed structure (``repr``: layers,
    sizes, dropout rates; memory addresses left out, they differ between processes) and each parameter's and
    buffer's name, dtype and shape (a float32 run is not resumed in float64; a lazy module's parameter before its
    first forward pass is "uninitialised"). Not its weights: those are the checkpoint's.

    Args:
        model: an ``nn.Module``.
    Returns:
        ``{"model": str, "parameters": [str, ...]}`` (JSON-ready).
    """
    def shape(v) -> str:
        try:
            return str(tuple(v.shape))
        except RuntimeError:  # a lazy module's parameter before its first forward pass
            return "(uninitialised)"
    return {"model": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model)),  # the memory addresses a repr may print
            "parameters": [f"{k} {str(v.dtype).replace('torch.', '')} {shape(v)}"
                           for k, v in model.state_dict().items()]}


class RunCheckpoint:
    """One file that holds a training run's state after its last finished epoch — the model's and the optimiser's
    state, the valuer's epochs (:meth:`chg.EpochValuer.state_dict`), the shuffling generator's state and torch's,
    NumPy's and Python's global random states (dropout, a transform that draws from them) — so that a run cut short
    (an error, Ctrl-C, a killed job) started again with the same file resumes after that epoch and ends with the
    values and weights of the run that was not cut short, bit for bit (the loops of
    :func:`chg.value_data`, :func:`chg.sequence.value_sequences` and ``chg value --checkpoint``). The file is
    rewritten atomically after every epoch (:func:`atomic_write`) and kept at the end: the same call again returns
    the same values without training, and a call with more ``epochs`` trains only the epochs that are new. It is
    first written before training (epoch 0), so a run cut short in its first epoch restarts from the same model and
    random state, and a path that cannot be written fails before any training.

    What makes a file another run's: its function, settings (``settings``: the model's printed structure among them —
    architecture, layer sizes, dropout rates; its initial weights are the file's), training data
    (:func:`data_fingerprint`: every row is read once more to check it, the first ``STABLE_ROWS`` twice more) and
    more finished epochs than asked for.

    Args:
        path: the file (``.pt``; its folder is created), or None (no checkpoint: :meth:`resume` returns 0 and
            :meth:`save` does nothing).
        caller: the function whose run it is (``"value_data"``, ``"value_sequences"``).
        settings: the run's settings but ``epochs`` (JSON-ready: numbers, strings, None, lists): a file of a run with
            other settings is refused.
        dataset: the training set (:func:`data_fingerprint`): a file of a run on other data is refused (data whose
            rows read differently each time — random augmentation — cannot be checked: a warning at resumption).
    Raises:
        TypeError: ``path`` is neither None nor a path (str or ``os.PathLike``).
    """

    def __init__(self, path, caller: str, settings: dict, dataset):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{caller}: checkpoint must be a file path (str or pathlib.Path) or None, got {path!r}")
        self.path = None if path is None else Path(path)
        self.caller = caller
        self.settings = json.loads(json.dumps(settings, default=str)) if self.path is not None else settings
        self.rows = len(dataset)
        self.data = data_fingerprint(dataset) if self.path is not None else None

    def resume(self, model, optimizer, valuer, generator: torch.Generator, epochs: int) -> int:
        """Restore the run from the file, if it exists (nothing is changed when it cannot be restored).

        Args:
            model, optimizer: the run's ``nn.Module`` and ``torch.optim.Optimizer`` (restored in place). valuer: its
                valuer (``load_state_dict``). generator: the training loader's shuffling generator. epochs: the
                epochs the run is asked for.
        Returns:
            the epochs already done (0: no file; the run starts from the beginning).
        Raises:
            CheckpointError: (a ``ValueError``) the path is a folder; the file is not a run checkpoint of this
                library, or is of another function, other settings (naming the first that differs), other data or
                another model, or holds more epochs than asked for; the message says to delete the file (or pass
                another path) to start afresh. A file of another run that holds no finished epoch (written before
                training, the run cut short in its first epoch) is replaced instead, with a warning.
        """
        if self.path is None:
            return 0
        if self.path.is_dir():
            raise CheckpointError(f"checkpoint {self.path} is a folder: pass a file path, e.g. {self.path / 'run.pt'}")
        if not self.path.exists():
            return 0
        fresh = f"; delete {self.path} (or pass another checkpoint path) to start afresh"

        def refuse(why: str):
            return CheckpointError(f"checkpoint {self.path} {why}{fresh}")

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # a file torch cannot read, or one that is not weights-only
            raise refuse(f"cannot be read as a run checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
            raise refuse(f"is not a run checkpoint of chg ({RUN_FORMAT})")
        done = int(state["epochs_done"])
        other = self._other_run(state)
        if other is not None and done == 0:  # no epoch of that run finished: nothing to lose, start this one
            warnings.warn(f"checkpoint {self.path} holds no finished epoch of a run that {other}; this run starts "
                          "afresh and replaces it", stacklevel=3)
            return 0
        if other is not None:
            raise refuse(other)
        if state["data"] is None or self.data is None:
            warnings.warn(f"checkpoint {self.path}: the training set's rows read differently each time (a random "
                          "generator of the data set's own?), so whether this run's data are those of the run in the "
                          "file cannot be checked: resuming", stacklevel=3)
        if done > epochs:
            raise refuse(f"holds {done} finished epochs, more than the {epochs} asked for (ask for epochs >= {done} "
                         "to use it)")
        lazy = torch.nn.parameter.UninitializedTensorMixin  # a lazy module's parameter before its first forward
        mine, theirs = model.state_dict(), state["model"]
        unfit = sorted(set(mine) ^ set(theirs)) or [k for k, v in mine.items() if not isinstance(v, lazy) and
                                                     tuple(v.shape) != tuple(theirs[k].shape)]
        if unfit:  # refused before loading anything: a lazy layer, once filled in, could not be put back
            raise refuse(f"does not fit this run's model: its entries {unfit[:5]} differ in name or shape")
        before = ({k: v.clone() for k, v in mine.items() if not isinstance(v, lazy)},
                  optimizer.state_dict(), valuer.state_dict())
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            valuer.load_state_dict(state["valuer"])
        except (RuntimeError, ValueError, KeyError) as e:  # another architecture, a damaged file: undo
            model.load_state_dict(before[0], strict=False)
            optimizer.load_state_dict(before[1])
            valuer.load_state_dict(before[2])
            raise refuse(f"does not fit this run's model, optimiser or valuer ({type(e).__name__}: "
                         f"{str(e)[:300]})") from None
        generator.set_state(state["generator"])
        _set_random_states(state)  # dropout's draws, and a transform's that draws from NumPy or Python
        return done

    def _other_run(self, state: dict) -> Optional[str]:
        """What makes the file's run another run than this one (its function, a setting, the model, the data), as
        the end of a sentence "… is of a run …"; None when it is this run."""
        if state["caller"] != self.caller:
            return f"is of a run of {state['caller']}, not of {self.caller}"
        theirs, mine = state["settings"], self.settings
        for key in sorted(set(theirs) | set(mine)):
            a, b = theirs.get(key), mine.get(key)
            if a == b:
                continue
            if key == "model" and isinstance(a, str) and isinstance(b, str):
                a, b = a.splitlines(), b.splitlines()
            if key in ("model", "parameters") and isinstance(a, list) and isinstance(b, list):  # lines of the model
                k = next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))
                there, here = (t[k].strip() if k < len(t) else "(nothing)" for t in (a, b))
                what = "printed structure" if key == "model" else key
                return f"is of a run of another model: its {what} differs at line {k + 1} ({there!r} there, " \
                       f"{here!r} here)"
            if key == "valid_data":
                return "is of a run with another validation set (its rows differ)"
            return (f"is of a run with {key}={a!r}; this run has {key}={b!r}: only epochs may change between a run "
                    "and its resumption")
        if state.get("rows", self.rows) != self.rows:
            return f"is of a run on {state['rows']} training rows; this run has {self.rows}"
        if state["data"] is not None and self.data is not None and state["data"] != self.data:
            return ("is of a run on other training data (the rows differ, or are in another order; or the data set "
                    "draws its rows at random from a generator of its own, unseeded)")
        return None

    def save(self, epochs_done: int, model, optimizer, valuer, generator: torch.Generator) -> None:
        """Write the run's state after its epoch ``epochs_done`` (0: before training), atomically and synced to disk:
        a crash or a power cut while writing keeps the last file.

        Args:
            epochs_done: the epochs finished. model, optimizer, valuer, generator: as :meth:`resume`.
        Raises:
            OSError: the file cannot be written (a folder that is not writable, a full disk), naming it.
        """
        if self.path is None:
            return
        state = {"format": RUN_FORMAT, "caller": self.caller, "settings": self.settings, "data": self.data,
                 "rows": self.rows, "epochs_done": int(epochs_done), "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "valuer": valuer.state_dict(), "generator": generator.get_state(),
                 **_random_states()}

        def write(tmp):
            with open(tmp, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())  # on disk before the rename: a power cut keeps the last whole file
        try:
            atomic_write(self.path, write)
        except OSError as e:
            up = self.path.parent
            while not up.exists() and up != up.parent:
                up = up.parent
            why = f"{up} is a file, not a folder" if up.exists() and not up.is_dir() else (e.strerror or str(e))
            raise OSError(e.errno, f"checkpoint {self.path} cannot be written ({why}): pass a checkpoint path in a "
                                   "writable folder", str(self.path)) from e
