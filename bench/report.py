"""The report: one row per figure, the ratio against its baseline, and the table printed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    name: str
    ours: float
    baseline: float
    unit: str
    target: str
    limit: float
    higher_is_better: bool = False
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'benchmark':<44} {'ours':>10} {'baseline':>10} {'unit':<5} {'ratio':>6}  "
        f"{'target':<26} met"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.name:<44} {row.ours:>10.3f} {row.baseline:>10.3f} {row.unit:<5} "
            f"{row.ratio:>6.2f}  {row.target:<26} {'yes' if row.met else 'NO'}"
            + (f"  ({row.note})" if row.note else "")
        )
