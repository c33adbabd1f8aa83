from tests.api.conftest import fresh_throttles  # noqa: F401 - every test starts with a full run allowance
