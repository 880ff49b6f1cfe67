"""`make run`'s launcher stops everything it started, cleanly, however it is told to stop."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from tests.integration.stack import RunningStack, child_pid, isolated_stack

pytestmark = pytest.mark.integration


def services_of(stack: RunningStack) -> list[psutil.Process]:
    return psutil.Process(stack.process.pid).children(recursive=True)


def wait_for_exit(stack: RunningStack, timeout_s: float = 30.0) -> str:
    """The launcher's exit code must be 0; returns what it printed."""
    output, _ = stack.process.communicate(timeout=timeout_s)
    assert stack.process.returncode == 0, output
    return output.decode()


def test_ctrl_c_stops_every_service_and_restarts_none(database_url: str) -> None:
    with isolated_stack(database_url, capture_output=True) as (_broker, stack):
        services = services_of(stack)
        os.killpg(stack.process.pid, signal.SIGINT)  # what the terminal sends the whole foreground group
        printed = wait_for_exit(stack)
    assert "restart" not in printed, printed
    assert not any(service.is_running() and service.status() != psutil.STATUS_ZOMBIE for service in services)


def test_sigterm_stops_a_launcher_started_with_sigint_ignored(database_url: str) -> None:
    with isolated_stack(database_url, capture_output=True, sigint_ignored=True) as (_broker, stack):
        services = services_of(stack)
        stack.process.send_signal(signal.SIGTERM)  # docker stop, systemd, a background job's kill
        printed = wait_for_exit(stack)
    assert "stopping" in printed and "restart" not in printed, printed
    assert not any(service.is_running() and service.status() != psutil.STATUS_ZOMBIE for service in services)


def test_a_service_stopped_on_purpose_stops_the_stack_instead_of_being_restarted(database_url: str) -> None:
    with isolated_stack(database_url, capture_output=True) as (_broker, stack):
        os.kill(child_pid(stack, "gateway.main"), signal.SIGTERM)
        printed = wait_for_exit(stack)
    assert "gateway was stopped; stopping the others" in printed and "restart" not in printed, printed
