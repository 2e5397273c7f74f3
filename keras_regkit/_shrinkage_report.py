"""`ShrinkageReport`: what `keras_regkit.shrink` tried, and what it kept."""

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class ShrinkageRow:
    """One point of a shrinkage path.

    Attributes:
        level: the shrinkage level (`None` for the model as it came in).
        metric: the validation metric at that level.
        l2_norm: the L2 norm of all the shrunk weights together.
        zero_fraction: the fraction of them that are exactly 0.0.
        nonzero: how many of them are not 0.0.
        parameters: how many weights were subject to shrinkage.
    """

    level: float | None
    metric: float
    l2_norm: float
    zero_fraction: float
    nonzero: int
    parameters: int


@dataclasses.dataclass(frozen=True)
class ShrinkageReport:
    """The path `shrink` walked, and the point it chose.

    Attributes:
        method: the shrinkage method.
        monitor: the validation metric's name (`"loss"` is the data loss,
            without weight penalties).
        mode: `"min"` or `"max"`, how `monitor` improves.
        select: the selection rule, `"best"` or `"sparsest_within"`.
        tolerance: the relative tolerance of `"sparsest_within"`.
        rows: the model as it came in (`rows[0]`, level `None`), then one
            `ShrinkageRow` per level, in the order walked.
        chosen: the index in `rows` of the point the model was left at.

    Example:

    >>> report = ShrinkageReport(
    ...     method="scale", monitor="loss", mode="min", select="best",
    ...     tolerance=0.0, chosen=1, rows=(
    ...         ShrinkageRow(None, 0.50, 10.0, 0.0, 100, 100),
    ...         ShrinkageRow(0.1, 0.45, 9.1, 0.0, 100, 100),
    ...     ),
    ... )
    >>> report.chosen_level, report.after.metric
    (0.1, 0.45)
    >>> print(report.as_table())
    level     loss       l2_norm  zeros   nonzero/total
    (before)  0.5        10       0.0%    100/100
    0.1       0.45       9.1      0.0%    100/100  <- chosen
    """

    method: str
    monitor: str
    mode: str
    select: str
    tolerance: float
    rows: tuple[ShrinkageRow, ...]
    chosen: int

    @property
    def before(self) -> ShrinkageRow:
        """The `ShrinkageRow` of the model as it came in."""
        return self.rows[0]

    @property
    def after(self) -> ShrinkageRow:
        """The `ShrinkageRow` of the model as it was left."""
        return self.rows[self.chosen]

    @property
    def chosen_level(self) -> float | None:
        """The level kept, or `None` when the original weights were kept."""
        return self.after.level

    def as_table(self) -> str:
        """The path as a plain-text table, the chosen row marked."""
        header = (
            f"{'level':<9} {self.monitor:<10} {'l2_norm':<8} {'zeros':<7} "
            "nonzero/total"
        )
        lines = [header]
        for index, row in enumerate(self.rows):
            level = "(before)" if row.level is None else f"{row.level:.4g}"
            line = (
                f"{level:<9} {row.metric:<10.5g} {row.l2_norm:<8.5g} "
                f"{row.zero_fraction:<7.1%} {row.nonzero}/{row.parameters}"
            )
            if index == self.chosen and index > 0:
                line += "  <- chosen"
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain Python values, ready for `json.dumps`."""
        result = dataclasses.asdict(self)
        result["rows"] = [dataclasses.asdict(row) for row in self.rows]
        result["chosen_level"] = self.chosen_level
        for row in result["rows"]:
            if not math.isfinite(row["metric"]):
                row["metric"] = str(row["metric"])
        return result
