"""The migration playbook's cost table, recomputed from its own inputs.

The playbook (seeds: playbook-redis-to-dynamodb-sessions) argues for the move with a
monthly table: Redis $847, DynamoDB $623, $224 saved a month, $2,688 a year, 26% less, and
a return on the migration's $15,000 over one and three years. Every line is kept here with
the quantity and unit price the playbook gives for it, so the table can be summed again
and every line that states both a quantity and a price can be multiplied out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionflow._cost_model import PriceTable


@dataclass(frozen=True)
class StatedLine:
    """A line of the playbook's table: what it says it costs, and from what."""

    store: str
    what: str
    basis: str
    stated: float
    quantity: float | None = None
    unit_price: float | None = None
    """Dollars per unit of `quantity`, when the playbook gives both."""

    @property
    def computed(self) -> float | None:
        """Quantity times unit price, where the playbook states both."""
        if self.quantity is None or self.unit_price is None:
            return None
        return self.quantity * self.unit_price

    @property
    def implied_quantity(self) -> float | None:
        """The quantity the stated figure implies at the stated unit price."""
        return None if self.unit_price is None else self.stated / self.unit_price

    @property
    def consistent(self) -> bool | None:
        """Whether the stated figure follows from the quantity and price (None: no basis)."""
        computed = self.computed
        return None if computed is None else abs(computed - self.stated) < 1.0


def playbook_lines(prices: PriceTable) -> list[StatedLine]:
    """Return the playbook's lines, with its own unit prices (the ``playbook-2024`` table)."""
    return [
        StatedLine("redis", "Compute: 2x r6g.xlarge, on-demand", "2 nodes", 432.0),
        StatedLine("redis", "Storage: 2x 100 GB gp3 EBS", "200 GB", 89.0),
        StatedLine("redis", "Data transfer: cross-AZ", "200 GB/month @ $0.02/GB", 156.0, 200, 0.02),
        StatedLine("redis", "Backup: S3, daily snapshots", "-", 23.0),
        StatedLine("redis", "Monitoring: CloudWatch custom metrics", "-", 47.0),
        StatedLine("redis", "Support: engineering time", "4 hours @ $25/hour", 100.0, 4, 25.0),
        StatedLine(
            "dynamodb",
            "Read units: on-demand",
            "4.5M reads @ $0.25/million",
            234.0,
            4.5,
            prices.on_demand_read_per_million,
        ),
        StatedLine(
            "dynamodb",
            "Write units: on-demand",
            "1.2M writes @ $1.25/million",
            156.0,
            1.2,
            prices.on_demand_write_per_million,
        ),
        StatedLine("dynamodb", "DAX cluster: dax.r4.large, one node", "1 node", 187.0),
        StatedLine("dynamodb", "Storage", "100 GB @ $0.25/GB", 12.0, 100, prices.storage_gb_month),
        StatedLine("dynamodb", "Backup: point-in-time recovery", "-", 8.0),
        StatedLine("dynamodb", "Monitoring: CloudWatch", "-", 26.0),
    ]


MIGRATION_COST = 15_000.0
OPS_SAVINGS_PER_YEAR = 8_000.0
STATED_ROI = {"year_1": -4_312.0, "year_3": 27_064.0, "year_3_percent": 182.0}


@dataclass(frozen=True)
class PlaybookAudit:
    """The playbook's table summed again, line by line and in total."""

    lines: list[StatedLine]

    def total(self, store: str) -> float:
        """Return the monthly total of one side, from its stated lines."""
        return sum(line.stated for line in self.lines if line.store == store)

    @property
    def monthly_savings(self) -> float:
        """Redis total minus DynamoDB total."""
        return self.total("redis") - self.total("dynamodb")

    @property
    def annual_savings(self) -> float:
        """Twelve months of savings."""
        return 12 * self.monthly_savings

    @property
    def reduction(self) -> float:
        """Savings as a share of the Redis total."""
        return self.monthly_savings / self.total("redis")

    def roi(self, years: int) -> float:
        """Infrastructure and operations savings over `years`, less the migration's cost."""
        return years * (self.annual_savings + OPS_SAVINGS_PER_YEAR) - MIGRATION_COST

    @property
    def inconsistent(self) -> list[StatedLine]:
        """Lines whose stated figure does not follow from their own quantity and price."""
        return [line for line in self.lines if line.consistent is False]

    def to_json(self) -> dict[str, Any]:
        """Return the audit as plain data."""
        return {
            "redis_monthly": self.total("redis"),
            "dynamodb_monthly": self.total("dynamodb"),
            "monthly_savings": self.monthly_savings,
            "annual_savings": self.annual_savings,
            "reduction": round(self.reduction, 4),
            "roi_year_1": self.roi(1),
            "roi_year_3": self.roi(3),
            "roi_year_3_percent": round(100 * self.roi(3) / MIGRATION_COST, 1),
            "stated_roi": STATED_ROI,
            "lines": [
                {
                    "store": line.store,
                    "what": line.what,
                    "basis": line.basis,
                    "stated": line.stated,
                    "computed": None if line.computed is None else round(line.computed, 2),
                    "implied_quantity": line.implied_quantity,
                    "consistent": line.consistent,
                }
                for line in self.lines
            ],
        }


def audit_playbook(prices: PriceTable | None = None) -> PlaybookAudit:
    """Recompute the playbook's table with its own prices (the bundled ``playbook-2024``)."""
    return PlaybookAudit(playbook_lines(prices or PriceTable.load("playbook-2024")))
