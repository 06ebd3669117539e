"""``asyncq.__all__`` is exactly the documented public API, and every name in it resolves."""

from __future__ import annotations

import inspect

import asyncq

PUBLIC_API = {
    "App",
    "AsyncqError",
    "Backend",
    "Backoff",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "ConcurrencyLimit",
    "DeadLetter",
    "ErrorInfo",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobStatus",
    "JobStore",
    "LeaseLost",
    "OrjsonSerializer",
    "Progress",
    "QueueStats",
    "RateLimit",
    "Reject",
    "Retry",
    "Snooze",
    "Serializer",
    "State",
    "Task",
    "TaskCall",
    "MessageTooLarge",
    "Middleware",
    "TaskNotFound",
    "Worker",
    "WorkerInfo",
    "WorkerOptions",
    "current_job",
}


def test_all_is_the_documented_public_api() -> None:
    assert len(asyncq.__all__) == len(set(asyncq.__all__)), "a name is listed twice"
    assert set(asyncq.__all__) == PUBLIC_API


def test_every_exported_name_resolves_to_a_documented_asyncq_object() -> None:
    for name in asyncq.__all__:
        member = getattr(asyncq, name)
        assert member.__module__.startswith("asyncq."), name
        assert inspect.getdoc(member), f"asyncq.{name} has no docstring"


def test_errors_form_the_documented_hierarchy() -> None:
    assert issubclass(asyncq.ConfigurationError, asyncq.AsyncqError)
    assert issubclass(asyncq.BrokerUnavailable, asyncq.BrokerError)
    assert issubclass(asyncq.BrokerError, asyncq.AsyncqError)
    assert issubclass(asyncq.TaskNotFound, asyncq.AsyncqError)
    assert issubclass(asyncq.MessageTooLarge, asyncq.AsyncqError)
    assert issubclass(asyncq.MessageTooLarge, ValueError)
    for error in (asyncq.JobFailed, asyncq.JobCancelled, asyncq.JobNotFound):
        assert issubclass(error, asyncq.JobError)
        assert issubclass(error, asyncq.AsyncqError)
    # Handler control flow, not errors.
    assert not issubclass(asyncq.Retry, asyncq.AsyncqError)
    assert not issubclass(asyncq.Reject, asyncq.AsyncqError)


def test_version() -> None:
    assert isinstance(asyncq.__version__, str) and asyncq.__version__
