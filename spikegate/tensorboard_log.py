"""Per-epoch metrics to TensorBoard (``trainer.tensorboard=true``), into ``RUN_DIR/tensorboard``.

Optional: it needs the ``tensorboard`` package (``pip install 'spikegate[tensorboard]'``), which
torch's ``torch.utils.tensorboard`` writes with. Without it a run with ``trainer.tensorboard=true``
stops before training with a one-line :class:`TensorBoardUnavailable`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

__all__ = ["TensorBoardUnavailable", "TensorBoardLog", "open_tensorboard"]


class TensorBoardUnavailable(ImportError):
    """``trainer.tensorboard=true`` without the tensorboard package."""


class TensorBoardLog:
    """Writes each epoch's numeric metrics as scalars tagged with their ``metrics.json`` names
    (``train_loss``, ``test_accuracy``, ...), the step being the epoch.

    The writer is made at the first :meth:`log` with ``purge_step`` at that epoch, so a resumed
    run drops events a crashed attempt wrote past its last checkpoint."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise TensorBoardUnavailable(
                f"trainer.tensorboard=true needs the tensorboard package ({err}); "
                "pip install tensorboard (or pip install 'spikegate[tensorboard]'), or set trainer.tensorboard=false"
            ) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self._writer: Optional[Any] = None

    def log(self, row: dict[str, Any]) -> None:
        """One epoch's row (it has ``epoch``); flushed at once so a crash loses nothing logged."""
        step = int(row["epoch"])
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.log_dir), purge_step=step)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class _NoLog:
    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def open_tensorboard(enabled: Any, run_dir: str | Path):
    """A :class:`TensorBoardLog` into ``run_dir/tensorboard`` if ``enabled`` (the value of
    ``trainer.tensorboard``, a bool), else a log that does nothing."""
    if not isinstance(enabled, bool):
        raise TypeError(f"trainer.tensorboard: expected true or false, got {enabled!r}")
    return TensorBoardLog(Path(run_dir) / "tensorboard") if enabled else _NoLog()
