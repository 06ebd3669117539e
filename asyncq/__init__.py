"""asyncq: an async-first job runtime. See README.md and DESIGN.md for the contract."""

from .app import App, State
from .backend import Backend
from .errors import (
    AsyncqError,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    ErrorInfo,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    LeaseLost,
    MessageTooLarge,
    Reject,
    Retry,
    Snooze,
    TaskNotFound,
)
from .job import Job, JobContext, current_job
from .limits import ConcurrencyLimit, RateLimit
from .middleware import Middleware
from .records import DeadLetter, JobInfo, JobStatus, Progress, QueueStats, WorkerInfo
from .retry import Backoff
from .serializer import OrjsonSerializer, Serializer
from .store import JobStore
from .task import Task, TaskCall
from .worker import Worker
from .worker_options import WorkerOptions

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncqError",
    "Backend",
    "Backoff",
    "BrokerError",
    "BrokerUnavailable",
    "ConcurrencyLimit",
    "ConfigurationError",
    "DeadLetter",
    "ErrorInfo",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "LeaseLost",
    "JobStatus",
    "JobStore",
    "MessageTooLarge",
    "Middleware",
    "OrjsonSerializer",
    "Progress",
    "QueueStats",
    "RateLimit",
    "Reject",
    "Retry",
    "Serializer",
    "Snooze",
    "State",
    "Task",
    "TaskCall",
    "TaskNotFound",
    "Worker",
    "WorkerInfo",
    "WorkerOptions",
    "current_job",
]
