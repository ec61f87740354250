"""Many workers on one study: resilient storages, leases on the journal file, study locks, worker slots, torchrun."""
from nas.cluster.storage import (HEARTBEAT_SECONDS, GRACE_SECONDS, RETRY_SECONDS, MAX_RETRY, StorageUnavailable, is_journal, is_transient, retry_call, ResilientRDBStorage, open_storage)
from nas.cluster.lease import (LEASE_ATTR, CLAIM_ATTR, LeaseWatch, LeasedJournalStorage, RetryStaleTrial)
from nas.cluster.locks import (StudyLock)
from nas.cluster.workers import (register_worker, release_worker, settle, queued_retries, optimize, study_health, requeue_interrupted)
from nas.cluster.trials import (FINISHED, counted)
from nas.cluster.torchrun import (Ranks, split_nproc, under_torchrun, relaunch_under_torchrun)

__all__ = [
    "FINISHED",
    "counted",
    "HEARTBEAT_SECONDS",
    "GRACE_SECONDS",
    "RETRY_SECONDS",
    "MAX_RETRY",
    "StorageUnavailable",
    "is_journal",
    "is_transient",
    "retry_call",
    "ResilientRDBStorage",
    "open_storage",
    "LEASE_ATTR",
    "CLAIM_ATTR",
    "LeaseWatch",
    "LeasedJournalStorage",
    "RetryStaleTrial",
    "StudyLock",
    "register_worker",
    "release_worker",
    "settle",
    "queued_retries",
    "optimize",
    "study_health",
    "requeue_interrupted",
    "Ranks",
    "split_nproc",
    "under_torchrun",
    "relaunch_under_torchrun",
]
