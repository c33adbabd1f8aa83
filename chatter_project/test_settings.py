"""Settings for the test suite: the production settings plus what tests must fix at import time."""
import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("CHATTER_Q_SYNC", "1")  # django-q2 reads `sync` at import
# make test's pytest-xdist workers share one Redis: each gets a database of its own (cache keys, throttle counters,
# and the channel layer's channels, which follow the database number), as do the servers its tests start.
if os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw") and os.environ.get("REDIS_URL"):
    from urllib.parse import urlsplit

    _redis = urlsplit(os.environ["REDIS_URL"])
    os.environ["REDIS_URL"] = _redis._replace(path=f"/{int(os.environ['PYTEST_XDIST_WORKER'][2:]) + 1}").geturl()

from chatter_project.settings import *  # noqa: E402,F401,F403
from chatter_project.settings import DATABASES, SQLITE_ENGINE  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if DATABASES["default"]["ENGINE"] == SQLITE_ENGINE:
    # A file-backed test database (threads share it), one per pytest process so parallel runs never clash.
    os.environ.setdefault("CHATTER_TEST_DB_SUFFIX", str(os.getpid()))
    DATABASES["default"]["TEST"] = {
        "NAME": str(DATABASES["default"]["NAME"]).replace(".sqlite3", f"-test-{os.environ['CHATTER_TEST_DB_SUFFIX']}.sqlite3")
    }

# Provider tests script every reply; a client retry would consume the next one.
CHATTER_PROVIDER_MAX_RETRIES = 0

# The suite's own `flush` (after each transactional test): Django's result from fewer statements (its docstring).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.quick_flush"]  # noqa: F405

# No GIS here. drf-spectacular's django-filters support asks Django's GIS whether a filter is a geometry's the first
# time a process builds the schema, and GIS then looks for GDAL with ctypes' find_library (37 processes: ldconfig,
# gcc, ld) before it gives up. A library path that is none gives the same answer (no GIS) without looking.
GDAL_LIBRARY_PATH = "/nonexistent/libgdal.so"
