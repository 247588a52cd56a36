from __future__ import annotations

import durable
from examples.remind_user import User, remind_user


def test_remind_user_runs_to_completion_under_time_skipping() -> None:
    result = durable.run(remind_user, User(name="Ada", email="ada@example.com"), time_skipping=True)
    assert result == User(name="Ada", email="ada@example.com", times_reminded=2)
