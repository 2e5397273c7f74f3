"""Prechelt's stopping criteria GL, PQ and UP, epoch by epoch.

Lutz Prechelt, "Early Stopping - But When?", in Neural Networks: Tricks of
the Trade (1998), section 2.2. With `E_va(t)` the validation error at epoch
`t`, `E_tr(t)` the training error and `E_opt(t) = min_{t' <= t} E_va(t')`:

- generalization loss `GL(t) = 100 * (E_va(t) / E_opt(t) - 1)`;
  `GL_alpha` stops when `GL(t) > alpha`;
- training progress over a strip of `k` epochs ending at `t`,
  `P_k(t) = 1000 * (sum(E_tr) / (k * min(E_tr)) - 1)`; `PQ_alpha` stops at
  the end of a strip when `GL(t) / P_k(t) > alpha`;
- `UP_s` stops when the validation error rose from the end of one strip to
  the end of the next, `s` strips in a row.

Epochs count from the first monitored one; strips end every `k` epochs.

At zero error the quotients are taken at their limits, so a perfect fit
never divides by zero: `GL(t) = 0` while `E_va(t) = E_opt(t)` (both 0
included) and `+inf` once the error rises from `E_opt(t) = 0`; `P_k(t) = 0`
for a strip whose training errors are all 0 and `+inf` for one that reaches
0 from above. `PQ_alpha` stops when `GL(t) > alpha * P_k(t)`, the quotient
multiplied out, which is the same test where `P_k(t)` is positive and
finite and also holds where it is 0 (stop as soon as `GL(t) > 0`) or
infinite (no stop while training still makes infinite progress).
"""

import math


def generalization_loss(error, best):
    """Prechelt's `GL = 100 * (E_va / E_opt - 1)`, defined at `E_opt = 0`."""
    if error == best:
        return 0.0
    if best == 0:
        return math.inf
    return 100.0 * (error / best - 1)


def training_progress(strip):
    """Prechelt's `P_k = 1000 * (sum / (k * min) - 1)`, defined at `min = 0`."""
    lowest = min(strip)
    if lowest == 0:
        return 0.0 if max(strip) == 0 else math.inf
    return 1000.0 * (sum(strip) / (len(strip) * lowest) - 1)


class PrecheltCriterion:
    """One of GL, PQ or UP, fed one epoch at a time.

    Args:
        kind: "gl", "pq" or "up".
        alpha: the threshold; for "up", the number of strips `s`.
        strip_length: `k`, epochs per strip.
    """

    def __init__(self, kind, alpha, strip_length):
        self.kind = kind
        self.alpha = alpha
        self.strip_length = strip_length
        self.epochs = 0
        self.best = math.inf  # E_opt
        self.strip = []  # training errors of the current strip
        self.generalization_loss = None
        self.progress = None
        self.strip_end_error = None  # E_va at the end of the last strip
        self.rises = 0

    def update(self, validation_error, training_error=None):
        """Records an epoch; returns why to stop, or None."""
        self.epochs += 1
        self.best = min(self.best, validation_error)
        self.generalization_loss = generalization_loss(
            validation_error, self.best
        )
        if self.kind == "gl":
            if self.generalization_loss > self.alpha:
                return (
                    f"GL = {self.generalization_loss:.4g} > {self.alpha:g} "
                    "(Prechelt's generalization loss)"
                )
            return None
        if self.kind == "pq":
            self.strip.append(training_error)
            self.strip = self.strip[-self.strip_length :]
        if self.epochs % self.strip_length:
            return None
        if self.kind == "pq":
            self.progress = training_progress(self.strip)
            if self.generalization_loss > self.alpha * self.progress:
                return (
                    f"PQ = GL / P_{self.strip_length} = "
                    f"{self.generalization_loss:.4g} / {self.progress:.4g}"
                    f" > {self.alpha:g} (Prechelt)"
                )
            return None
        rose = (
            self.strip_end_error is not None
            and validation_error > self.strip_end_error
        )
        self.rises = self.rises + 1 if rose else 0
        self.strip_end_error = validation_error
        if self.rises >= self.alpha:
            return (
                f"validation error rose at the end of {self.rises} "
                "successive strips (Prechelt's UP)"
            )
        return None
