"""Progress lines for a job's log: where a long loop is, how fast it goes, when it will end.

On a terminal tqdm draws a bar; in a workflow job stderr is the job's log file
(`logs/<family>/...log`), where a bar is noise and silence hides a 2-hour job. So every long loop
(training, the curve / AutoNEB / simplex fits, the straight-through estimator) reports to one
`ProgressLog`, which writes a line when stderr is not a terminal: always after the first report and
at the end, otherwise at most every PROGRESS_EVERY_S seconds. `tail -f` on the log then shows the
step, the loss, the throughput and the ETA.
"""

from __future__ import annotations

import sys
import time

# At most one line per this many seconds (besides the first and the last) when not on a terminal.
PROGRESS_EVERY_S = 10.0


class ProgressLog:
    """Lines like `curve training: epoch 3/20  step 120/800  loss 0.4312  95.1 it/s  ETA 0m07s`.

    `start` and `end` are the loop's first and one-past-last step (a resumed loop starts later: its
    throughput counts only the steps this process ran). With `steps_per_epoch` the line also says
    the epoch. `label` names the loop ("" for the seeds' training, whose lines start with "epoch").
    `enabled` None means: only when stderr is not a terminal.
    """

    def __init__(self, start: int, end: int, steps_per_epoch: int | None = None, enabled: bool | None = None,
                 every_s: float | None = None, label: str = ""):
        self.start, self.end, self.spe = start, end, steps_per_epoch
        self.enabled = not sys.stderr.isatty() if enabled is None else enabled
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.label = label
        self.t0 = self.last = time.monotonic()
        self.first = True

    def update(self, step: int, values: dict[str, float]) -> None:
        """Report that `step` steps are done, with `values` (name → number or 0-d tensor, e.g.
        {"loss": 0.43}; a tensor is read only when a line is written, so no device sync otherwise)."""
        now = time.monotonic()
        if not self.enabled or not (self.first or step >= self.end or now - self.last >= self.every_s):
            return
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.end - step) / max(rate, 1e-9)
        where = f"step {step}/{self.end}"
        if self.spe:
            where = f"epoch {step // self.spe}/{-(-self.end // self.spe)}  {where}"
        shown = "".join(f"  {name} {value}" if isinstance(value, int) else f"  {name} {float(value):.4f}" for name, value in values.items())
        prefix = f"{self.label}: " if self.label else ""
        print(f"{prefix}{where}{shown}  {rate:.1f} it/s  ETA {duration(eta)}", file=sys.stderr, flush=True)
        self.first, self.last = False, now


def duration(seconds: float) -> str:
    """1h05m or 4m07s."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
