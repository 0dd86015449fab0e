"""Wait on a condition instead of sleeping a guessed time: `wait_until(predicate, timeout_s)`.

A plain module (not a test module): test files import it by name (`from waiting import
wait_until`); conftest.py also offers it as the `wait_until` fixture. The timeout is only a hang
guard (HANG_GUARD_S, seconds of time.monotonic): a test that passes waits exactly as long as the
condition takes, so a slow, loaded machine makes it slower, never red. A test that asserts how
fast something happens is a real-time check and carries `@pytest.mark.timing` instead.
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

# Long enough that only a hang reaches it on a loaded 2-core CI machine.
HANG_GUARD_S = 60.0


def wait_until(predicate: Callable[[], T], timeout_s: float = HANG_GUARD_S, poll_s: float = 0.01) -> T:
    """Poll `predicate()` every `poll_s` seconds until it returns a truthy value; return that value.

    timeout_s: hang guard (seconds); when it passes, the predicate's last (falsy) value is
    returned, so `assert wait_until(...)` fails with the test's own message. Exceptions raised
    by the predicate propagate.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(poll_s)
