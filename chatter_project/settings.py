"""Chatter settings: everything comes from the environment (docs/operations/configuration.md#settings)."""
import logging
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers as default_cors_headers
from django.core.exceptions import ImproperlyConfigured

from core.env import (
    env_bool,
    env_choice,
    env_fernet_keys,
    env_graphs,
    env_int,
    env_list,
    env_networks,
    env_origins,
    env_store_index,
    env_str,
    redis_channel_prefix,
)
from core.tracing import traces_exporters

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("CHATTER_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# From the environment, else the key `make run` generated for this installation (var/secret_key).
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY and (VAR_DIR / "secret_key").is_file():
    SECRET_KEY = (VAR_DIR / "secret_key").read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY is required unless DEBUG is on")
    SECRET_KEY = "insecure-debug-only-key"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "chatter_project.daphne_app.DaphneConfig",  # daphne's runserver, its server imported only by a server
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",  # only for its old table: migration chatter_project 0002 moved its keys, hashed
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "corsheaders",
    "django_q",
    "chatter_project",  # model-free: installed for its historical migrations (ChatterProjectConfig)
    "core",  # one table: the hot reads' version where no cache is shared (core.models.HotReadsVersion)
    "keys",
    "webhooks",
    "conversations",
    "knowledge",
    "workflows",
    "scores",
    "datasets",
    "experiments",
    "analytics",
    "audit",
    "agent_server",
    "budgets",
    "prompts",
    "gateway",
    "tools",
]

# Under ASGI, Django runs an async-capable MiddlewareMixin middleware's process_request and process_response each
# on the request's thread (two hand-offs from the event loop per middleware), but runs the middleware above a
# sync-only one synchronously, on that thread. WhiteNoise's middleware is sync-only: innermost, it makes the whole
# stack one synchronous block (a request hands off to its thread about 6 times instead of 16). Static files are
# still served before URL resolution; the middleware above it does nothing costly for them (sessions and users
# are lazy).
MIDDLEWARE = [
    "core.correlation.correlation_id_middleware",  # first: every answer, a refusal too, carries one
    "core.request_text.nul_refusal_middleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

# CORS (django-cors-headers), for browser clients served from another origin (agent-chat-ui, your own page): off
# unless CHATTER_CORS_ALLOWED_ORIGINS names the origins allowed, and then only on the APIs. Keys travel in headers
# (x-api-key, Authorization), never in cookies, so no credentials are allowed. Outermost, so every answer (a refusal
# too) carries the headers and a preflight is answered before anything asks for a key.
CORS_ALLOWED_ORIGINS = list(env_origins("CHATTER_CORS_ALLOWED_ORIGINS"))
CORS_URLS_REGEX = r"^/(langgraph|api/v1|v1)/"
# What LangGraph's SDKs and UIs send beside Django's defaults: the key, a stream's resume point, agent-chat-ui's
# auth scheme.
CORS_ALLOW_HEADERS = (*default_cors_headers, "x-api-key", "last-event-id", "x-auth-scheme", "x-request-id",
                      "traceparent", "tracestate")
# What the SDKs read from an answer: a run's path (Content-Location) and its stream's (Location); a throttle's wait;
# the request's correlation id (core.correlation).
CORS_EXPOSE_HEADERS = ("content-location", "location", "retry-after", "x-request-id")
if CORS_ALLOWED_ORIGINS:
    MIDDLEWARE.insert(0, "corsheaders.middleware.CorsMiddleware")

# OpenTelemetry traces (core.tracing): on when OpenTelemetry's standard variables ask for an exporter that can export
# (OTEL_TRACES_EXPORTER: otlp, the default, once an OTLP endpoint is set; console), unless OTEL_SDK_DISABLED is true.
# Off, nothing of OpenTelemetry is imported. On, each request is a span (outermost: every answer is in it) and runs,
# nodes, LLM and tool calls are spans under it.
CHATTER_TRACES_EXPORTERS = traces_exporters()
CHATTER_TRACING = bool(CHATTER_TRACES_EXPORTERS)
if CHATTER_TRACING:
    MIDDLEWARE.insert(0, "core.otel.tracing_middleware")

ROOT_URLCONF = "chatter_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "libraries": {"money": "core.money"},  # {% load money %}: amounts as plain decimals
        },
    },
]
WSGI_APPLICATION = "chatter_project.wsgi.application"
ASGI_APPLICATION = "chatter_project.asgi.application"

# Database: the embedded default is SQLite in WAL mode; DATABASE_URL selects PostgreSQL (or another SQLite file,
# with the same options: writes take the lock when they begin and wait for it, never fail on a busy database).
# SQLite is Django's backend on pysqlite3 with sqlite-vec loaded, for vector search (core/db_backends/sqlite_vec).
SQLITE_ENGINE = "core.db_backends.sqlite_vec"
_SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    try:
        # Django's own connection pool (psycopg_pool): a request's or a run's thread borrows a connection and gives
        # it back when it is done, so no request opens a connection of its own. Its size bounds the database work
        # a process takes on at once; a thread that waits longer than CHATTER_DB_POOL_TIMEOUT_S for a connection
        # gets a 503. The pool is closed before a fork (django-q2 forks its workers) and made anew after it
        # (core/db.py).
        _db = dj_database_url.parse(DATABASE_URL)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a configuration error
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if _db["ENGINE"] == "django.db.backends.postgresql":
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 2, "max_size": env_int("CHATTER_DB_POOL_SIZE", 20, minimum=2),
            "timeout": env_int("CHATTER_DB_POOL_TIMEOUT_S", 30, minimum=1)}
        # Parameters bound by the server, and a statement run 5 times on a connection prepared there (Django's
        # documented options; both off by default for external poolers such as PgBouncer, which Django's own pool
        # is not): a turn's statements are the same every time, so the client no longer renders each value into
        # SQL and PostgreSQL no longer parses and plans them again.
        _db["OPTIONS"].update(server_side_binding=True, prepare_threshold=5)
    elif _db["ENGINE"] == "django.db.backends.sqlite3":
        _db.update(ENGINE=SQLITE_ENGINE, CONN_MAX_AGE=None, OPTIONS={**_SQLITE_OPTIONS, **_db.get("OPTIONS", {})})
else:
    _db = {
        "ENGINE": SQLITE_ENGINE,
        "NAME": VAR_DIR / "chatter.sqlite3",
        # Persistent: a thread keeps its connection from one request or run to the next (request threads outlive
        # their request: core/serving.py); opening one reads the schema and runs the PRAGMAs.
        "CONN_MAX_AGE": None,
        "OPTIONS": dict(_SQLITE_OPTIONS),
    }
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    # The one event bus (workflows/hub.py): pub/sub delivers at most once, enough because feeds replay the
    # database; the list layer cost 17 Redis commands per event (bench/RESULTS.md, B3).
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                    "CONFIG": {"hosts": [REDIS_URL], "prefix": redis_channel_prefix(REDIS_URL)}}
    }
    # Short socket timeouts: a Redis that stops answering costs a request at most a second, after which the run
    # throttle counts in-process for a while (core/api/throttling.py).
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"pool_class": "core.redis_pool.SharedConnectionPool",
                                      "socket_connect_timeout": 1, "socket_timeout": 1}}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise expects it even before collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/admin/login/"

# --- Chatter ---------------------------------------------------------------------------------
CHATTER_PROVIDERS = {"local", "openai", "anthropic"}
CHATTER_DEFAULT_PROVIDER = env_choice("CHATTER_DEFAULT_PROVIDER", "local", CHATTER_PROVIDERS)
# The model a run gets when it names a provider but no model.
CHATTER_PROVIDER_DEFAULT_MODELS = {
    "local": "local-echo-1",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
}
CHATTER_DEFAULT_MODEL = env_str("CHATTER_DEFAULT_MODEL") or CHATTER_PROVIDER_DEFAULT_MODELS[CHATTER_DEFAULT_PROVIDER]
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
# A JSON or YAML file of deployments: model names served by several upstreams, with fallbacks (engine.
# routing; read and checked at start-up). Unset: each provider's one upstream above.
CHATTER_DEPLOYMENTS = env_str("CHATTER_DEPLOYMENTS") or None
# Python graphs of your own (LangGraph, compiled or factories), run as Chatter runs: {name: (module file, attr)}.
CHATTER_GRAPHS = env_graphs("CHATTER_GRAPHS")
# LangGraph's store searches by meaning when it has an index: {"dims", "embed": "provider:model", "fields"} as JSON,
# else langgraph.json's store.index (docs/api/langgraph.md, "The store"). Unset: none.
CHATTER_STORE_INDEX = env_store_index("CHATTER_STORE_INDEX", graphs="CHATTER_GRAPHS")
# The store a registered graph's run is given (LangGraph's BaseStore, its run owner's items): built per run, by owner.
CHATTER_GRAPH_STORE = "agent_server.graph_store.OwnerStore"
CHATTER_EXECUTION_TIMEOUT_S = env_int("CHATTER_EXECUTION_TIMEOUT_S", 300, minimum=1)
CHATTER_MAX_CONCURRENT_RUNS = env_int("CHATTER_MAX_CONCURRENT_RUNS", 10, minimum=1)
# A run's feed (its SSE, its websocket) whose reads of the database fail tries again for this long, then ends saying so.
CHATTER_FEED_DB_WAIT_S = env_int("CHATTER_FEED_DB_WAIT_S", 120, minimum=1)
# A run under a hard budget reserves its calls' worst case; a call with no max_tokens is capped at this many.
CHATTER_BUDGET_DEFAULT_MAX_TOKENS = env_int("CHATTER_BUDGET_DEFAULT_MAX_TOKENS", 1024, minimum=1)
# Chatter's own embeddings (knowledge): texts per embeddings request (each request an LLM call), and the model a
# new collection embeds with (`provider/model`; local/all-MiniLM-L6-v2 runs in-process and searches by meaning,
# local/local-embed-1 is lexical, for tests and demos).
CHATTER_EMBEDDING_BATCH_SIZE = env_int("CHATTER_EMBEDDING_BATCH_SIZE", 64, minimum=1)
CHATTER_KNOWLEDGE_EMBEDDING_MODEL = env_str("CHATTER_KNOWLEDGE_EMBEDDING_MODEL") or "local/all-MiniLM-L6-v2"
# A new collection's chunks: size and overlap in its model's tokens (all-MiniLM-L6-v2 reads at most 254), the
# largest size any model may be given, and the most text one document may have.
CHATTER_KNOWLEDGE_CHUNK_SIZE = env_int("CHATTER_KNOWLEDGE_CHUNK_SIZE", 200, minimum=1)
CHATTER_KNOWLEDGE_CHUNK_OVERLAP = env_int("CHATTER_KNOWLEDGE_CHUNK_OVERLAP", 40, minimum=0)
CHATTER_KNOWLEDGE_MAX_CHUNK_TOKENS = env_int("CHATTER_KNOWLEDGE_MAX_CHUNK_TOKENS", 2000, minimum=1)
CHATTER_KNOWLEDGE_MAX_TEXT_CHARS = env_int("CHATTER_KNOWLEDGE_MAX_TEXT_CHARS", 5_000_000, minimum=1)
# Webhooks (budget alerts, /langgraph/ runs and crons) are signed with this secret (HMAC-SHA256); a budget, run or
# cron may name a webhook only when it is set. A failed delivery is retried after CHATTER_WEBHOOK_RETRY_S, doubling.
CHATTER_WEBHOOK_SECRET = env_str("CHATTER_WEBHOOK_SECRET") or ""
CHATTER_WEBHOOK_RETRY_S = env_int("CHATTER_WEBHOOK_RETRY_S", 30, minimum=1)
# Outbound requests made for a user (webhooks, MCP tool servers) go to public addresses only; these networks (CIDRs
# or addresses, comma-separated) are the operator's internal destinations, allowed too (core/outbound.py).
# CHATTER_WEBHOOK_ALLOWED_NETWORKS is the older name, still honoured: both lists are allowed.
CHATTER_OUTBOUND_ALLOWED_NETWORKS = env_networks("CHATTER_OUTBOUND_ALLOWED_NETWORKS")
CHATTER_WEBHOOK_ALLOWED_NETWORKS = env_networks("CHATTER_WEBHOOK_ALLOWED_NETWORKS")
# MCP tool servers (tools/): how long discovery or one tool call may take, and how much of a call's result is kept.
CHATTER_MCP_TIMEOUT_S = env_int("CHATTER_MCP_TIMEOUT_S", 30, minimum=1)
CHATTER_MCP_MAX_RESULT_BYTES = env_int("CHATTER_MCP_MAX_RESULT_BYTES", 1_048_576, minimum=1)
# The most of any one answer of an MCP server read (tools/mcp_answers.py): past it the request fails unread. It must
# hold a whole result the cap above keeps, with its JSON around it (FastMCP sends a text result twice).
CHATTER_MCP_MAX_ANSWER_BYTES = env_int("CHATTER_MCP_MAX_ANSWER_BYTES", 16 * CHATTER_MCP_MAX_RESULT_BYTES,
                                       minimum=CHATTER_MCP_MAX_RESULT_BYTES)
# MCP servers the operator declares (tools/declared.py): a JSON file in the `mcpServers` shape; stdio servers only here.
CHATTER_MCP_SERVERS_FILE = env_str("CHATTER_MCP_SERVERS_FILE", "")
# How long a kept MCP session (tools/mcp_pool.py: reused across a run's calls and across runs) may sit unused.
CHATTER_MCP_IDLE_S = env_int("CHATTER_MCP_IDLE_S", 60, minimum=1)
# Knowledge (knowledge/): a file added to a collection may be at most this large (413 over it, knowledge/parsers.py).
CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES = env_int("CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES", 20_971_520, minimum=1024)
# PostgreSQL: the candidates an HNSW search keeps (pgvector's hnsw.ef_search, at least k): more is slower and finds more
# of the true nearest (knowledge/vector_index.py; bench/b12_vector_search.py measures both).
CHATTER_KNOWLEDGE_HNSW_EF_SEARCH = env_int("CHATTER_KNOWLEDGE_HNSW_EF_SEARCH", 100, minimum=1)
# Keys of what is kept encrypted at rest (an MCP server's headers), core/encryption.py: Fernet keys, the first
# encrypts; a key derived from SECRET_KEY always decrypts too (and encrypts when none is set).
CHATTER_ENCRYPTION_KEYS = env_fernet_keys("CHATTER_ENCRYPTION_KEYS")
# How an outbound host name becomes addresses: (host, port) -> [address]. A seam for tests, not an operator setting.
CHATTER_OUTBOUND_RESOLVER = "core.outbound.system_resolve"
# Mail (Django's settings): with EMAIL_HOST set, alerts are also emailed to the budget's owner.
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "chatter@localhost"
CHATTER_ALERT_EMAILS = bool(env_str("EMAIL_HOST"))
# Threads of the runner (workflows/runner.py) per process: at most this many streamed runs execute at once in
# a server process; the rest wait their turn (their run is `running`, their stream open).
CHATTER_RUN_THREADS = env_int("CHATTER_RUN_THREADS", 16, minimum=1)
CHATTER_EVENT_RETENTION_DAYS = env_int("CHATTER_EVENT_RETENTION_DAYS", 30, minimum=1)

# django-q2: ORM broker by default. timeout < retry so a long run is never delivered twice.
Q_CLUSTER = {
    "name": "chatter",
    "orm": "default",
    "workers": env_int("CHATTER_WORKERS", 2, minimum=1),
    "timeout": CHATTER_EXECUTION_TIMEOUT_S + 60,
    "retry": CHATTER_EXECUTION_TIMEOUT_S + 120,
    "max_attempts": 1,
    "catch_up": False,
    "sync": env_bool("CHATTER_Q_SYNC", False),
}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {"unread_not_quoted": {"()": "core.log_filters.UnreadNotQuoted"},
                "refusal_not_traced": {"()": "core.log_filters.RefusalNotTraced"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}, "openai": {"level": "WARNING"},
                "django_q": {"level": "WARNING"},
                # The MCP SDK logs every JSON-RPC message whole at DEBUG: tool arguments and results before Chatter
                # scrubs them of the server's credentials (tools.mcp_client): LOG_LEVEL, but never below INFO.
                "mcp": {"level": max(logging.INFO, logging.getLevelNamesMapping().get(LOG_LEVEL, logging.INFO))},
                # Its clients log a line a server sent that is no message of the protocol with a traceback quoting
                # it (a caller's arguments): said by kind instead.
                **{f"mcp.client.{transport}": {"filters": ["unread_not_quoted"]}
                   for transport in ("stdio", "streamable_http", "sse")},
                # A NUL in a path or query string (core.request_text): the client's bad input, one warning line.
                "django.security.NulCharacter": {"filters": ["refusal_not_traced"]}},
}

CHATTER_PROVIDER_MAX_RETRIES = env_int("CHATTER_PROVIDER_MAX_RETRIES", 2)
# How long one provider request may wait for its next bytes (never longer than what is left of the run).
CHATTER_PROVIDER_TIMEOUT_S = env_int("CHATTER_PROVIDER_TIMEOUT_S", 120, minimum=1)
# The recovery sweep (manage.py sweep_executions) runs this often through django-q2 (whole minutes, at
# least one).
CHATTER_SWEEP_INTERVAL_S = env_int("CHATTER_SWEEP_INTERVAL_S", 60, minimum=1)
# A run whose worker died goes on from its last checkpoint this many times; after that the sweep ends it.
CHATTER_RESUME_ATTEMPTS = env_int("CHATTER_RESUME_ATTEMPTS", 2, minimum=0)
# Slows the local demo model's stream so people can watch it; 0 in tests and benchmarks.
CHATTER_LOCAL_TOKEN_DELAY_MS = env_int("CHATTER_LOCAL_TOKEN_DELAY_MS", 0)

# --- REST API (docs/api/rest.md) ----------------------------------------------------------------------
# Chat and execution creation share one throttle scope, "runs" (per user): e.g. "120/min".
CHATTER_RUN_THROTTLE = env_str("CHATTER_RUN_THROTTLE", "120/min")
_runs, _, _period = CHATTER_RUN_THROTTLE.partition("/")
if not (_runs.isdigit() and int(_runs) > 0 and _period in ("s", "sec", "m", "min", "h", "hour", "d", "day")):
    raise ImproperlyConfigured(f"CHATTER_RUN_THROTTLE must look like 120/min, got {CHATTER_RUN_THROTTLE!r}")
# Request bodies larger than this are refused with 413 before they are parsed; JSON nested deeper than
# CHATTER_MAX_JSON_DEPTH is a 400 (a graph or config never needs more).
CHATTER_MAX_REQUEST_BYTES = env_int("CHATTER_MAX_REQUEST_BYTES", 1_048_576, minimum=1024)
CHATTER_MAX_JSON_DEPTH = 32
DATA_UPLOAD_MAX_MEMORY_SIZE = CHATTER_MAX_REQUEST_BYTES
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes an unauthenticated request a 401 (not a 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "keys.auth.ApiTokenAuthentication",
        "keys.auth.ApiKeyBearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "keys.auth.ApiKeyScope"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        *(["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    ],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "core.api.filters.StrictOrderingFilter",
    ],
    "EXCEPTION_HANDLER": "core.api.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"runs": CHATTER_RUN_THROTTLE},
    "DEFAULT_SCHEMA_CLASS": "core.api.schema.ChatterAutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Chatter API",
    "DESCRIPTION": "LLM workflows with exact token and cost accounting.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.schema.error_responses_add",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ExecutionStatusEnum": "workflows.models.WorkflowExecution.Status",
        "ExecutionModeEnum": "workflows.models.WorkflowExecution.Mode",
        "RunModeEnum": "workflows.api.serializers.RUN_MODES",
        "NodeStatusEnum": "workflows.models.NodeExecution.Status",
        "ConversationStatusEnum": "conversations.models.Conversation.Status",
        "BudgetModeEnum": "budgets.models.Budget.Mode",
        "BudgetScopeEnum": "budgets.models.Budget.Scope",
        "BudgetPeriodEnum": "budgets.models.Budget.Period",
        "PromptTypeEnum": "prompts.models.PromptVersion.Type",
        "ScoreDataTypeEnum": "scores.models.Score.DataType",
        "ScoreSourceEnum": "scores.models.Score.Source",
        "ExperimentStatusEnum": "experiments.models.Experiment.Status",
        "ExperimentResultStatusEnum": "experiments.models.ExperimentResult.Status",
        "McpServerTransportEnum": "tools.models.McpServer.Transport",
        "McpServerApiTransportEnum": "tools.api.serializers.API_TRANSPORTS",
    },
}
