"""The pipeline: the one package that knows the order of the stages.

    inbox (durable raw message)
      → connector.decode / extract         (connectors)  ┐
      → identity + build_observation       (normalize)   │ prepare: reads, never writes
      → resources.stage (rows, hashes)     (store)       ┘
      → resources.write                    (store)       ┐
      → rules.evaluate                     (rules)       │ commit: one transaction
      → outbox.enqueue                     (sync)        │
      → inbox.finish                       (same txn)    ┘

*Prepare* (``prepare``) does a message's per-reading CPU work without writing anything
(``hub.staging`` says what it may not decide alone and how the commit checks what it read). On
SQLite it runs outside the write lock, and ``hub worker --prepare-procs N`` runs it in other
processes. *Commit* (``commit``) writes a batch of prepared messages in one transaction: the
resources of consecutive messages in one upsert, rules per message in message order, the outbox
and every message's outcome in the same transaction. A crash anywhere rolls the whole batch back
to "received" (nothing lost, and nothing half-done to duplicate); resource ids are deterministic,
so reprocessing a message rewrites the same resources without new versions.

A bad message fails alone: data errors are that message's outcome; a bug (an exception) in a
combined write rolls back to the savepoint before it and its messages are processed again one by
one, each inside its own savepoint, as are messages prepare sent to the lock: a bug then fails
only its message.

Modules: ``flow`` (``Pipeline``: a message's stages, prepare, the commit's choices and a batch
in process), ``runs`` (writing a run of prepared messages), ``outcome`` (what a message
produced).
"""

from hub.pipeline.flow import Pipeline
from hub.pipeline.outcome import Outcome

__all__ = ["Outcome", "Pipeline"]
