"""sessionflow: server-side web sessions on Redis, DynamoDB or both.

The Redis and DynamoDB backends import their client libraries only when first used, so
``import sessionflow`` works with just the core installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.memory import AsyncMemoryBackend
from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.backends.tiered import AsyncTieredBackend
from sessionflow._async.control import AsyncControlPlane, AsyncMemoryControlPlane
from sessionflow._async.conversations.base import AsyncConversationBackend
from sessionflow._async.conversations.memory import AsyncMemoryConversations
from sessionflow._async.store import AsyncSessionStore
from sessionflow._async.tier_index import AsyncMemoryTierIndex, AsyncTierIndex
from sessionflow._clock import Clock, ManualClock, SystemClock
from sessionflow._codec import Codec
from sessionflow._control import ProcessBeat, RepairDepth, RepairItem, StageRecord
from sessionflow._conversation import Conversation, ConversationPage
from sessionflow._cookies import CookieSettings
from sessionflow._errors import (
    BackendError,
    CodecError,
    ConfigError,
    ConversationTooLarge,
    CorruptRecord,
    InvalidAttribute,
    InvalidConversation,
    InvalidSessionId,
    MigrationRefused,
    SessionExists,
    SessionflowError,
    SessionNotFound,
    SessionTooLarge,
    StageChanged,
    VersionConflict,
)
from sessionflow._events import (
    SessionEvent,
    SessionEventKind,
    SessionEventListener,
    SessionEventLog,
)
from sessionflow._id_header import HeaderSettings
from sessionflow._ids import new_session_id, storage_key, validate_session_id
from sessionflow._migration_stats import MigrationStats
from sessionflow._policy import SessionPolicy
from sessionflow._record import SessionRecord
from sessionflow._session import Session, SessionSummary
from sessionflow._stages import Stage
from sessionflow._store_stats import StoreStats
from sessionflow._sync.backends.base import Backend
from sessionflow._sync.backends.memory import MemoryBackend
from sessionflow._sync.backends.migrating import MigratingBackend
from sessionflow._sync.backends.tiered import TieredBackend
from sessionflow._sync.control import ControlPlane, MemoryControlPlane
from sessionflow._sync.conversations.base import ConversationBackend
from sessionflow._sync.conversations.memory import MemoryConversations
from sessionflow._sync.store import SessionStore
from sessionflow._sync.tier_index import MemoryTierIndex, TierIndex
from sessionflow._tier import Durability, HotTierHealth, Lifecycle, SweepReport, TierStats

if TYPE_CHECKING:
    from sessionflow._async.backends.dynamodb import AsyncDynamoDBBackend
    from sessionflow._async.backends.instrumented import (
        AsyncInstrumentedBackend,
        AsyncInstrumentedEvictable,
    )
    from sessionflow._async.backends.redis import AsyncRedisBackend
    from sessionflow._async.conversations.dynamodb import AsyncDynamoDBConversations
    from sessionflow._async.conversations.migrating import AsyncMigratingConversations
    from sessionflow._async.conversations.records import AsyncConversationRecords
    from sessionflow._async.conversations.redis import AsyncRedisConversations
    from sessionflow._async.migration import AsyncMigration
    from sessionflow._async.redis_control import AsyncRedisControlPlane
    from sessionflow._async.redis_tier_index import AsyncRedisTierIndex
    from sessionflow._dynamodb_client import dynamodb_client_config
    from sessionflow._metrics import (
        BackendMetrics,
        CapacityCollector,
        MigrationCollector,
        StoreStatsCollector,
        TierCollector,
    )
    from sessionflow._sync.backends.dynamodb import DynamoDBBackend
    from sessionflow._sync.backends.instrumented import InstrumentedBackend, InstrumentedEvictable
    from sessionflow._sync.backends.redis import RedisBackend
    from sessionflow._sync.conversations.dynamodb import DynamoDBConversations
    from sessionflow._sync.conversations.migrating import MigratingConversations
    from sessionflow._sync.conversations.records import ConversationRecords
    from sessionflow._sync.conversations.redis import RedisConversations
    from sessionflow._sync.migration import Migration
    from sessionflow._sync.redis_control import RedisControlPlane
    from sessionflow._sync.redis_tier_index import RedisTierIndex

__version__ = "0.1.0"

_LAZY = {
    "AsyncRedisBackend": "sessionflow._async.backends.redis",
    "RedisBackend": "sessionflow._sync.backends.redis",
    "AsyncDynamoDBBackend": "sessionflow._async.backends.dynamodb",
    "DynamoDBBackend": "sessionflow._sync.backends.dynamodb",
    "dynamodb_client_config": "sessionflow._dynamodb_client",
    "AsyncInstrumentedBackend": "sessionflow._async.backends.instrumented",
    "AsyncInstrumentedEvictable": "sessionflow._async.backends.instrumented",
    "InstrumentedBackend": "sessionflow._sync.backends.instrumented",
    "InstrumentedEvictable": "sessionflow._sync.backends.instrumented",
    "BackendMetrics": "sessionflow._metrics",
    "CapacityCollector": "sessionflow._metrics",
    "StoreStatsCollector": "sessionflow._metrics",
    "MigrationCollector": "sessionflow._metrics",
    "AsyncRedisControlPlane": "sessionflow._async.redis_control",
    "RedisControlPlane": "sessionflow._sync.redis_control",
    "AsyncRedisTierIndex": "sessionflow._async.redis_tier_index",
    "RedisTierIndex": "sessionflow._sync.redis_tier_index",
    "TierCollector": "sessionflow._metrics",
    "AsyncRedisConversations": "sessionflow._async.conversations.redis",
    "RedisConversations": "sessionflow._sync.conversations.redis",
    "AsyncDynamoDBConversations": "sessionflow._async.conversations.dynamodb",
    "DynamoDBConversations": "sessionflow._sync.conversations.dynamodb",
    "AsyncMigratingConversations": "sessionflow._async.conversations.migrating",
    "MigratingConversations": "sessionflow._sync.conversations.migrating",
    "AsyncConversationRecords": "sessionflow._async.conversations.records",
    "ConversationRecords": "sessionflow._sync.conversations.records",
    "AsyncMigration": "sessionflow._async.migration",
    "Migration": "sessionflow._sync.migration",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module-level lazy attribute
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sessionflow' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AsyncBackend",
    "AsyncControlPlane",
    "AsyncConversationBackend",
    "AsyncConversationRecords",
    "AsyncDynamoDBBackend",
    "AsyncDynamoDBConversations",
    "AsyncInstrumentedBackend",
    "AsyncInstrumentedEvictable",
    "AsyncMemoryBackend",
    "AsyncMemoryControlPlane",
    "AsyncMemoryConversations",
    "AsyncMemoryTierIndex",
    "AsyncMigratingBackend",
    "AsyncMigratingConversations",
    "AsyncMigration",
    "AsyncRedisBackend",
    "AsyncRedisControlPlane",
    "AsyncRedisConversations",
    "AsyncRedisTierIndex",
    "AsyncSessionStore",
    "AsyncTierIndex",
    "AsyncTieredBackend",
    "Backend",
    "BackendError",
    "BackendMetrics",
    "CapacityCollector",
    "Clock",
    "Codec",
    "CodecError",
    "ConfigError",
    "ControlPlane",
    "Conversation",
    "ConversationBackend",
    "ConversationPage",
    "ConversationRecords",
    "ConversationTooLarge",
    "CookieSettings",
    "CorruptRecord",
    "Durability",
    "DynamoDBBackend",
    "DynamoDBConversations",
    "HeaderSettings",
    "HotTierHealth",
    "InstrumentedBackend",
    "InstrumentedEvictable",
    "InvalidAttribute",
    "InvalidConversation",
    "InvalidSessionId",
    "Lifecycle",
    "ManualClock",
    "MemoryBackend",
    "MemoryControlPlane",
    "MemoryConversations",
    "MemoryTierIndex",
    "MigratingBackend",
    "MigratingConversations",
    "Migration",
    "MigrationCollector",
    "MigrationRefused",
    "MigrationStats",
    "ProcessBeat",
    "RedisBackend",
    "RedisControlPlane",
    "RedisConversations",
    "RedisTierIndex",
    "RepairDepth",
    "RepairItem",
    "Session",
    "SessionEvent",
    "SessionEventKind",
    "SessionEventListener",
    "SessionEventLog",
    "SessionExists",
    "SessionNotFound",
    "SessionPolicy",
    "SessionRecord",
    "SessionStore",
    "SessionSummary",
    "SessionTooLarge",
    "SessionflowError",
    "Stage",
    "StageChanged",
    "StageRecord",
    "StoreStats",
    "StoreStatsCollector",
    "SweepReport",
    "SystemClock",
    "TierCollector",
    "TierIndex",
    "TierStats",
    "TieredBackend",
    "VersionConflict",
    "__version__",
    "dynamodb_client_config",
    "new_session_id",
    "storage_key",
    "validate_session_id",
]
