"""durable: code-first durable workflows for AWS Lambda, written as Python generators.

>>> from durable import workflow, activity, Context
"""

from durable.errors import (
    ActivityError,
    Cancelled,
    ConfigurationError,
    ConflictError,
    DurableError,
    InstanceExistsError,
    InstanceFinishedError,
    InstanceNotFoundError,
    NonDeterminismError,
    SerializationError,
    UnknownWorkflowError,
    WorkflowFailed,
)
from durable.history import Event, InstanceStatus, Status, dump_history, load_history
from durable.info import ActivityInfo, activity_info
from durable.retry import RetryPolicy
from durable.runtime.local import Runtime, run
from durable.store import HistoryStore, MemoryStore, SQLiteStore, open_store
from durable.tasks import Task
from durable.workflow import Activity, Context, Workflow, WorkflowResult, activity, workflow

__version__ = "0.1.0"

__all__ = [
    "Activity",
    "ActivityError",
    "ActivityInfo",
    "Cancelled",
    "ConfigurationError",
    "ConflictError",
    "Context",
    "DurableError",
    "Event",
    "HistoryStore",
    "InstanceExistsError",
    "InstanceFinishedError",
    "InstanceNotFoundError",
    "InstanceStatus",
    "MemoryStore",
    "NonDeterminismError",
    "RetryPolicy",
    "Runtime",
    "SQLiteStore",
    "SerializationError",
    "Status",
    "Task",
    "UnknownWorkflowError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowResult",
    "activity",
    "activity_info",
    "dump_history",
    "load_history",
    "open_store",
    "run",
    "workflow",
]
