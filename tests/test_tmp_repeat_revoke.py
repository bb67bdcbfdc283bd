import pytest
from .test_worker_revoke import test_revoke_with_terminate_kills_the_running_task as base
from .worker_helpers import redis_setup  # noqa: F401

@pytest.mark.parametrize("i", range(10))
@pytest.mark.timeout(90)
def test_again(i, redis_setup):
    base(redis_setup)
