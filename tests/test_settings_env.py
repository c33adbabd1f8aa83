"""Settings come from the environment and a bad value stops start-up naming the variable
(docs/operations/configuration.md#settings).

Two cases start a process: a bad value stops Django's start with the variable's name on stderr, and Django starts
without a SECRET_KEY under DEBUG. The others run the settings module afresh, in a namespace of its own, as a
process's first import of it does, under exactly the environment such a process would have (os.environ replaced for
the while): what they check is what the module makes of the environment, and a process start costs about 2 s of CPU
(issue 43 item 24)."""
import os
import runpy
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from tests import launcher

pytestmark = pytest.mark.one_database  # settings are read under an environment of their own, with its database

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "chatter_project" / "settings.py"


def environment(tmp_path, **env) -> dict[str, str]:
    """This process's environment without the settings a test sets itself, with `env`."""
    environment = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL")}
    environment.update({"DJANGO_SETTINGS_MODULE": "chatter_project.settings", "CHATTER_VAR_DIR": str(tmp_path),
                        **env})
    return environment


def start(tmp_path, *, then: str = "", **env):
    return launcher.run([sys.executable, "-c", f"import django; django.setup(); {then}"], cwd=ROOT,
                        env=environment(tmp_path, **env), timeout=60)


def settings_under(tmp_path, **env) -> dict:
    """The settings module's names, the module run afresh under exactly the environment `start` gives a process."""
    exact = environment(tmp_path, **env)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(exact)
    try:
        return runpy.run_path(str(SETTINGS))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_bad_value_stops_the_process_naming_the_variable(tmp_path):
    result = start(tmp_path, SECRET_KEY="k", CHATTER_MAX_CONCURRENT_RUNS="lots")
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == \
        "django.core.exceptions.ImproperlyConfigured: CHATTER_MAX_CONCURRENT_RUNS must be an integer, got 'lots'"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHATTER_MAX_CONCURRENT_RUNS", "lots"),
        ("CHATTER_EXECUTION_TIMEOUT_S", "0"),
        ("DEBUG", "maybe"),
        ("CHATTER_DEFAULT_PROVIDER", "skynet"),
        ("DATABASE_URL", "nonsense://"),
        ("CHATTER_GRAPHS", "/nonexistent/langgraph.json"),
        ("CHATTER_GRAPHS", str(ROOT / "tests" / "agent_server" / "graphs" / "agent.py")),  # not a JSON file
        ("CHATTER_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,intranet"),
        ("CHATTER_WEBHOOK_ALLOWED_NETWORKS", "10.1.2.3/24"),  # host bits set: refused, not widened
        ("CHATTER_OUTBOUND_ALLOWED_NETWORKS", "10.0.0.0/8,intranet"),
        ("CHATTER_ENCRYPTION_KEYS", "not-a-fernet-key"),
        ("CHATTER_MCP_MAX_ANSWER_BYTES", "1000"),  # less than CHATTER_MCP_MAX_RESULT_BYTES: no whole result would fit
        ("CHATTER_CORS_ALLOWED_ORIGINS", "localhost:3000"),  # no scheme
        ("CHATTER_CORS_ALLOWED_ORIGINS", "http://localhost:3000/"),  # a path, even "/", never matches an Origin
        ("CHATTER_CORS_ALLOWED_ORIGINS", "http://ui.example,*"),  # no wildcard: name the origins
        ("CHATTER_CORS_ALLOWED_ORIGINS", "https://ui.example:99999"),
        ("CHATTER_CORS_ALLOWED_ORIGINS", "https://user@ui.example"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),  # OpenTelemetry's values Chatter exports with: otlp, console, none
        ("OTEL_TRACES_EXPORTER", "otlp,jaeger"),
        ("OTEL_TRACES_EXPORTER", "none,console"),  # none is alone or not at all
        # the SDK's own variables Chatter documents (docs/operations/tracing.md): refused by the SDK with a bare
        # ValueError, or passed over for its default, where they are not checked here
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "abc"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),  # less than the default batch (512)
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1"),
        ("OTEL_BSP_SCHEDULE_DELAY", "1.5"),
        ("OTEL_TRACES_SAMPLER", "bogus"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "abc"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),  # no scheme
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key"),  # no value
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment"),
        ("OTEL_SDK_DISABLED", "yes"),  # the SDK knows true alone: anything else left tracing on
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path, variable, value):
    with pytest.raises(ImproperlyConfigured) as refused:
        settings_under(tmp_path, SECRET_KEY="k", **{variable: value})
    assert variable in str(refused.value)


def test_a_bad_opentelemetry_value_stops_the_process_naming_the_variable_and_what_it_may_be(tmp_path):
    """The SDK would stop every process with a bare ValueError naming no variable ("max_queue_size must be a
    positive integer.")."""
    result = start(tmp_path, SECRET_KEY="k", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
                   OTEL_BSP_MAX_QUEUE_SIZE="0")
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == ("django.core.exceptions.ImproperlyConfigured: OTEL_BSP_MAX_QUEUE_SIZE "
                                              "must be a whole number of spans, at least 1, got '0'")


@pytest.mark.parametrize("environment", [
    {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100", "OTEL_BSP_SCHEDULE_DELAY": "20"},
    {"OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "ignored"},  # (read by ratio samplers only)
    {"OTEL_EXPORTER_OTLP_TIMEOUT": "2.5", "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318"},
    {"OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team=abc,x-dataset=chatter",
     "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod", "OTEL_SDK_DISABLED": "false"},
    {"OTEL_BSP_MAX_QUEUE_SIZE": "", "OTEL_EXPORTER_OTLP_TIMEOUT": ""},  # empty is unset, as the SDK reads it
])
def test_opentelemetry_values_the_sdk_takes_are_taken(tmp_path, environment):
    settings_under(tmp_path, SECRET_KEY="k", **environment)


def test_a_bad_otlp_header_is_named_without_the_headers_values(tmp_path):
    with pytest.raises(ImproperlyConfigured) as refused:
        settings_under(tmp_path, SECRET_KEY="k", OTEL_EXPORTER_OTLP_HEADERS="x-api-key=s3cret-key,x-dataset")
    assert "OTEL_EXPORTER_OTLP_HEADERS" in str(refused.value) and "s3cret" not in str(refused.value)


def test_a_secret_key_is_required_unless_debug(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        settings_under(tmp_path)
    assert settings_under(tmp_path, DEBUG="1")["SECRET_KEY"] == "insecure-debug-only-key"
    started = start(tmp_path, DEBUG="1")  # and Django starts on it
    assert started.returncode == 0, started.stderr


def test_the_key_make_run_generated_is_used_when_the_environment_has_none(tmp_path):
    (tmp_path / "secret_key").write_text("generated-once\n")
    assert settings_under(tmp_path)["SECRET_KEY"] == "generated-once"


def cors(settings: dict) -> tuple[list[str], bool]:
    return settings["CORS_ALLOWED_ORIGINS"], "corsheaders.middleware.CorsMiddleware" in settings["MIDDLEWARE"]


def test_cors_origins_are_read_as_browsers_send_them_and_cors_is_off_without_them(tmp_path, monkeypatch):
    origins = " http://LocalHost:3000, https://ui.example ,tauri://localhost"
    configured = settings_under(tmp_path, SECRET_KEY="k", CHATTER_CORS_ALLOWED_ORIGINS=origins)
    assert cors(configured) == (["http://localhost:3000", "https://ui.example", "tauri://localhost"], True)

    assert cors(settings_under(tmp_path, SECRET_KEY="k", CHATTER_CORS_ALLOWED_ORIGINS="")) == ([], False)
    monkeypatch.delenv("CHATTER_CORS_ALLOWED_ORIGINS", raising=False)
    assert cors(settings_under(tmp_path, SECRET_KEY="k")) == ([], False)


def test_a_sqlite_database_url_gets_the_embedded_databases_locking(tmp_path):
    """Writes take SQLite's lock when they begin and wait for it, with DATABASE_URL=sqlite:///… too (without these,
    two writers upgrading their reads failed at once with "database is locked")."""
    settings = settings_under(tmp_path, DEBUG="1", DATABASE_URL=f"sqlite:///{tmp_path / 'other.sqlite3'}")

    options = settings["DATABASES"]["default"]["OPTIONS"]
    assert (options["transaction_mode"], options["timeout"], "WAL" in options["init_command"]) == \
        ("IMMEDIATE", 20, True)


NO_ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "OTEL_SDK_DISABLED": ""}


@pytest.mark.parametrize(("environment", "exporters"), [
    ({}, ()),  # otlp, the default, once an endpoint is set
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
    ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),  # no endpoint needed
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("console",)),
    ({"OTEL_TRACES_EXPORTER": " OTLP , console,otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
     ("otlp", "console")),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("console",)),  # otlp with no endpoint exports nowhere
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ()),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, ()),
])
def test_otel_traces_exporter_names_the_exporters_and_tracing_is_on_with_one(tmp_path, environment, exporters):
    settings = settings_under(tmp_path, SECRET_KEY="k", **{**NO_ENDPOINT, **environment})
    assert settings["CHATTER_TRACES_EXPORTERS"] == exporters
    assert settings["CHATTER_TRACING"] is bool(exporters)
    assert ("core.otel.tracing_middleware" in settings["MIDDLEWARE"]) is bool(exporters)
