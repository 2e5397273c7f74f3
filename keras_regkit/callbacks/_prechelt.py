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
"""

import math


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
        self.generalization_loss = 100.0 * (validation_error / self.best - 1)
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
            k = self.strip_length
            self.progress = 1000.0 * (
                sum(self.strip) / (k * min(self.strip)) - 1
            )
            quotient = (
                math.inf
                if self.progress == 0
                else self.generalization_loss / self.progress
            )
            if self.generalization_loss > 0 and quotient > self.alpha:
                return (
                    f"PQ = GL / P_{k} = {self.generalization_loss:.4g} / "
                    f"{self.progress:.4g} > {self.alpha:g} (Prechelt)"
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
