"""Settings for the test suite: the production settings plus what tests must fix at import time."""
import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("CHATTER_Q_SYNC", "1")  # django-q2 reads `sync` at import

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
