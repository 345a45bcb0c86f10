"""A monthly cost model for session storage, from measured traffic and a versioned price table.

It prices one workload five ways: Redis only (ElastiCache nodes sized for the data),
DynamoDB on-demand, DynamoDB provisioned (sized for the peak), provisioned with a DAX
cluster, and the hybrid tier (Redis sized for the hot set, DynamoDB taking what the tier
sends it). Every estimate lists the assumptions it rests on next to its figures.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sessionflow._codec import DYNAMODB_ITEM_LIMIT
from sessionflow._errors import ConfigError

GIB = 1024**3
GB = 1000**3
SECONDS_PER_HOUR = 3600
DEFAULT_PRICES = "aws-us-east-1-2026-11"


@dataclass(frozen=True)
class NodeType:
    """A priced node: ElastiCache (with memory) or DAX (memory not used)."""

    name: str
    hourly: float
    memory_gib: float = 0.0


@dataclass(frozen=True)
class PriceTable:
    """Unit prices with where they came from and when they were recorded."""

    name: str
    recorded: str
    hours_per_month: float
    on_demand_read_per_million: float
    on_demand_write_per_million: float
    provisioned_rcu_hour: float
    provisioned_wcu_hour: float
    storage_gb_month: float
    free_storage_gb: float
    cache_nodes: tuple[NodeType, ...]
    dax_nodes: tuple[NodeType, ...]
    reserved_memory_share: float
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_PRICES) -> PriceTable:
        """Load a bundled table by name (``aws-us-east-1-2026-11``) or a TOML file by path."""
        path = Path(name_or_path)
        if path.suffix == ".toml" or path.exists():
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read the price table {path}: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise ConfigError(f"the price table {path} is not UTF-8 text") from exc
        else:
            bundled = resources.files("sessionflow") / "prices" / f"{name_or_path}.toml"
            if not bundled.is_file():
                raise ConfigError(
                    f"no price table {name_or_path!r}; bundled: {', '.join(bundled_tables())}"
                )
            text = bundled.read_text()
        try:
            return cls.parse(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the price table {name_or_path} is not valid TOML: {exc}") from exc

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> PriceTable:
        """Build a table from parsed TOML; ConfigError names the missing or bad field."""
        try:
            ddb, dax, cache = raw["dynamodb"], raw["dax"], raw["elasticache"]
            table = cls(
                name=str(raw["name"]),
                recorded=str(raw["recorded"]),
                hours_per_month=_positive(raw, "hours_per_month"),
                on_demand_read_per_million=_positive(ddb, "on_demand_read_per_million"),
                on_demand_write_per_million=_positive(ddb, "on_demand_write_per_million"),
                provisioned_rcu_hour=_positive(ddb, "provisioned_rcu_hour"),
                provisioned_wcu_hour=_positive(ddb, "provisioned_wcu_hour"),
                storage_gb_month=_positive(ddb, "storage_gb_month"),
                free_storage_gb=float(ddb.get("free_storage_gb", 0)),
                cache_nodes=tuple(
                    sorted(
                        (
                            NodeType(name, float(v[0]), float(v[1]))
                            for name, v in cache["nodes"].items()
                        ),
                        key=lambda node: node.memory_gib,
                    )
                ),
                dax_nodes=tuple(NodeType(name, float(v)) for name, v in dax["nodes"].items()),
                reserved_memory_share=float(cache.get("reserved_memory_share", 0.25)),
                sources={
                    "dynamodb": str(ddb.get("source", "")),
                    "dax": str(dax.get("source", "")),
                    "elasticache": str(cache.get("source", "")),
                },
            )
        except KeyError as exc:
            raise ConfigError(f"the price table lacks {exc.args[0]!r}") from exc
        except (TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"the price table has a malformed entry: {exc}") from exc
        if not table.cache_nodes:
            raise ConfigError("the price table lists no ElastiCache node types")
        return table

    def dax_node(self, name: str | None) -> NodeType:
        """Return the DAX node type called `name`, or the cheapest."""
        if not self.dax_nodes:
            raise ConfigError("the price table lists no DAX node types")
        if name is None:
            return min(self.dax_nodes, key=lambda node: node.hourly)
        for node in self.dax_nodes:
            if node.name == name:
                return node
        known = ", ".join(node.name for node in self.dax_nodes)
        raise ConfigError(f"no DAX node type {name!r} in the price table; known: {known}")


def _positive(section: dict[str, Any], key: str) -> float:
    value = float(section[key])
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"the price table's {key} must be a positive number")
    return value


def bundled_tables() -> list[str]:
    """Names of the price tables that ship with sessionflow."""
    folder = resources.files("sessionflow") / "prices"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


@dataclass(frozen=True)
class Workload:
    """What the fleet does, in the units storage is billed by.

    Request units are DynamoDB's: a strongly consistent read of up to 4 KB is one read
    unit, a write of up to 1 KB one write unit. They come from measured consumed capacity
    when the run was on DynamoDB, else from the operations and the item size.
    """

    read_units_per_second: float
    write_units_per_second: float
    sessions: int
    item_bytes: float
    redis_bytes_per_session: float
    peak_factor: float = 2.0
    hot_fraction: float = 0.2
    hybrid_read_share: float = 0.05
    hybrid_write_share: float = 0.21
    source: str = "given"
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "read_units_per_second",
            "write_units_per_second",
            "item_bytes",
            "redis_bytes_per_session",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, not {value}")
        if self.item_bytes > DYNAMODB_ITEM_LIMIT:
            raise ConfigError(
                f"a DynamoDB item holds at most {DYNAMODB_ITEM_LIMIT:,} bytes, "
                f"not {self.item_bytes:,.0f}"
            )
        if self.sessions < 0:
            raise ConfigError("sessions must be >= 0")
        if not 1 <= self.peak_factor <= 1000:  # noqa: PLR2004
            raise ConfigError("the peak factor must be between 1 and 1000")
        for name in ("hot_fraction", "hybrid_read_share", "hybrid_write_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be between 0 and 1")


@dataclass(frozen=True)
class LineItem:
    """One priced part of an estimate."""

    what: str
    quantity: str
    monthly: float


@dataclass(frozen=True)
class Estimate:
    """The monthly cost of one way to store the sessions."""

    option: str
    items: tuple[LineItem, ...]
    assumptions: tuple[str, ...]

    @property
    def monthly(self) -> float:
        """The estimate's monthly total."""
        return sum(item.monthly for item in self.items)

    def to_json(self) -> dict[str, Any]:
        """Return the estimate as plain data for a report."""
        return {
            "option": self.option,
            "monthly": round(self.monthly, 2),
            "items": [
                {"what": i.what, "quantity": i.quantity, "monthly": round(i.monthly, 2)}
                for i in self.items
            ],
            "assumptions": list(self.assumptions),
        }


@dataclass(frozen=True)
class Knobs:
    """Choices an estimate depends on that traffic cannot tell: replicas, utilisation, DAX."""

    replicas: int = 1
    target_utilization: float = 0.7
    dax_nodes: int = 3
    dax_node_type: str | None = None
    dax_hit_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.replicas < 0 or self.dax_nodes < 1:
            raise ConfigError("replicas must be >= 0 and DAX nodes >= 1")
        if not 0 < self.target_utilization <= 1:
            raise ConfigError("target utilisation must be in (0, 1]")
        if not 0 <= self.dax_hit_rate <= 1:
            raise ConfigError("the DAX hit rate must be between 0 and 1")


def estimate_all(
    workload: Workload, prices: PriceTable, knobs: Knobs | None = None
) -> list[Estimate]:
    """Price the workload every way sessionflow can store it."""
    knobs = knobs or Knobs()
    pricings: tuple[tuple[str, Callable[[], Estimate]], ...] = (
        ("Redis only", lambda: redis_only(workload, prices, knobs)),
        ("DynamoDB on-demand", lambda: dynamodb_on_demand(workload, prices)),
        ("DynamoDB provisioned", lambda: dynamodb_provisioned(workload, prices, knobs)),
        ("DynamoDB provisioned + DAX", lambda: dynamodb_provisioned_dax(workload, prices, knobs)),
        ("the hybrid tier", lambda: hybrid(workload, prices, knobs)),
    )
    estimates: list[Estimate] = []
    for option, price in pricings:
        # Each input may be finite and still multiply past what a float holds: refuse that
        # rather than print "$inf" (or write null into the JSON report).
        try:
            estimate = price()
        except OverflowError:
            estimate = None
        if estimate is None or not math.isfinite(estimate.monthly):
            raise ConfigError(
                f"the workload is too large to price: {option} comes to more than a number "
                "can hold (check the sessions, the sizes and the scale)"
            )
        estimates.append(estimate)
    return estimates


def _per_month(per_second: float, prices: PriceTable) -> float:
    return per_second * prices.hours_per_month * SECONDS_PER_HOUR


def _cluster(data_bytes: float, prices: PriceTable, replicas: int) -> tuple[NodeType, int, int]:
    """Return the smallest node type that holds the data, else shards of the largest; node count."""
    usable = [
        (node, node.memory_gib * GIB * (1 - prices.reserved_memory_share))
        for node in prices.cache_nodes
    ]
    for node, room in usable:
        if data_bytes <= room:
            return node, 1, 1 + replicas
    node, room = usable[-1]
    shards = math.ceil(data_bytes / room)
    return node, shards, shards * (1 + replicas)


def _redis_items(
    label: str, data_bytes: float, prices: PriceTable, replicas: int
) -> tuple[LineItem, str]:
    node, shards, nodes = _cluster(data_bytes, prices, replicas)
    monthly = nodes * node.hourly * prices.hours_per_month
    quantity = f"{nodes} x {node.name} ({shards} shard(s), {replicas} replica(s) each)"
    why = (
        f"{label}: {data_bytes / GIB:,.2f} GiB of sessions; a node keeps "
        f"{prices.reserved_memory_share:.0%} of its memory in reserve"
    )
    return LineItem(f"ElastiCache nodes ({label})", quantity, monthly), why


def _storage(workload: Workload, prices: PriceTable) -> LineItem:
    gb = workload.sessions * workload.item_bytes / GB
    billable = max(gb - prices.free_storage_gb, 0.0)
    return LineItem(
        "DynamoDB storage",
        f"{gb:,.2f} GB ({billable:,.2f} billable)",
        billable * prices.storage_gb_month,
    )


def redis_only(workload: Workload, prices: PriceTable, knobs: Knobs) -> Estimate:
    """Every session in ElastiCache."""
    data = workload.sessions * workload.redis_bytes_per_session
    item, why = _redis_items("all sessions", data, prices, knobs.replicas)
    return Estimate(
        "Redis only (ElastiCache)",
        (item,),
        (why, "sized by memory; a node serves far more requests than sessions need"),
    )


def _on_demand_requests(
    read_units: float, write_units: float, prices: PriceTable
) -> tuple[LineItem, LineItem]:
    reads, writes = _per_month(read_units, prices), _per_month(write_units, prices)
    return (
        LineItem(
            "DynamoDB read request units",
            f"{reads / 1e6:,.1f} M",
            reads / 1e6 * prices.on_demand_read_per_million,
        ),
        LineItem(
            "DynamoDB write request units",
            f"{writes / 1e6:,.1f} M",
            writes / 1e6 * prices.on_demand_write_per_million,
        ),
    )


def dynamodb_on_demand(workload: Workload, prices: PriceTable) -> Estimate:
    """Every session in DynamoDB, billed per request."""
    reads, writes = _on_demand_requests(
        workload.read_units_per_second, workload.write_units_per_second, prices
    )
    return Estimate(
        "DynamoDB on-demand",
        (reads, writes, _storage(workload, prices)),
        (
            (
                f"{workload.read_units_per_second:,.1f} read and "
                f"{workload.write_units_per_second:,.1f} write units/s on average "
                f"({workload.source})"
            ),
        ),
    )


def _provisioned(
    read_units: float, write_units: float, prices: PriceTable, knobs: Knobs, peak_factor: float
) -> tuple[LineItem, LineItem]:
    rcu = math.ceil(read_units * peak_factor / knobs.target_utilization)
    wcu = math.ceil(write_units * peak_factor / knobs.target_utilization)
    hours = prices.hours_per_month
    return (
        LineItem(
            "DynamoDB provisioned read capacity",
            f"{rcu:,} RCU",
            rcu * prices.provisioned_rcu_hour * hours,
        ),
        LineItem(
            "DynamoDB provisioned write capacity",
            f"{wcu:,} WCU",
            wcu * prices.provisioned_wcu_hour * hours,
        ),
    )


def dynamodb_provisioned(workload: Workload, prices: PriceTable, knobs: Knobs) -> Estimate:
    """Every session in DynamoDB, capacity provisioned for the peak."""
    rcu, wcu = _provisioned(
        workload.read_units_per_second,
        workload.write_units_per_second,
        prices,
        knobs,
        workload.peak_factor,
    )
    return Estimate(
        "DynamoDB provisioned",
        (rcu, wcu, _storage(workload, prices)),
        (
            (
                f"capacity for the peak ({workload.peak_factor:.1f}x the mean) at "
                f"{knobs.target_utilization:.0%} utilisation, all month (no auto scaling down)"
            ),
        ),
    )


def dynamodb_provisioned_dax(workload: Workload, prices: PriceTable, knobs: Knobs) -> Estimate:
    """Provisioned DynamoDB behind a DAX cluster that answers a share of the reads."""
    node = prices.dax_node(knobs.dax_node_type)
    rcu, wcu = _provisioned(
        workload.read_units_per_second * (1 - knobs.dax_hit_rate),
        workload.write_units_per_second,
        prices,
        knobs,
        workload.peak_factor,
    )
    dax = LineItem(
        "DAX nodes",
        f"{knobs.dax_nodes} x {node.name}",
        knobs.dax_nodes * node.hourly * prices.hours_per_month,
    )
    return Estimate(
        "DynamoDB provisioned + DAX",
        (rcu, wcu, dax, _storage(workload, prices)),
        (
            (
                f"DAX answers {knobs.dax_hit_rate:.0%} of reads; it caches eventually consistent "
                "reads only, and sessionflow reads consistently, so measure before you count on it"
            ),
            "writes go through DAX to DynamoDB unchanged",
        ),
    )


def hybrid(workload: Workload, prices: PriceTable, knobs: Knobs) -> Estimate:
    """Return the hybrid tier: the hot set in ElastiCache, DynamoDB on-demand for the rest."""
    hot = workload.sessions * workload.hot_fraction * workload.redis_bytes_per_session
    redis, why = _redis_items("hot sessions", hot, prices, knobs.replicas)
    reads, writes = _on_demand_requests(
        workload.read_units_per_second * workload.hybrid_read_share,
        workload.write_units_per_second * workload.hybrid_write_share,
        prices,
    )
    return Estimate(
        "Hybrid tier (Redis hot, DynamoDB cold)",
        (redis, reads, writes, _storage(workload, prices)),
        (
            why,
            f"{workload.hot_fraction:.0%} of sessions hot",
            (
                f"DynamoDB sees {workload.hybrid_read_share:.0%} of reads (promotions) and "
                f"{workload.hybrid_write_share:.0%} of writes (write-back flushes and demotions; "
                "write-through sends all of them)"
            ),
        ),
    )
