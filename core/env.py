"""Settings read from the environment, failing loudly with the variable's name."""
import ipaddress
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int | None, *, minimum: int = 0) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def redis_channel_prefix(url: str) -> str:
    """The channel layer's prefix for a Redis URL. Redis's pub/sub spans its numbered databases: channels carry the
    URL's database number, so deployments on one Redis with databases of their own (/1, /2) never hear each other's
    events. Database 0 keeps channels_redis's own prefix."""
    database = urlsplit(url).path.strip("/") or "0"
    return "asgi" if database == "0" else f"asgi-db{database}"


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP networks ("10.1.2.0/24", "fd00::/8"; an address is its own /32 or /128). Unset: none.
    A network with host bits set ("10.1.2.3/24") is refused rather than widened silently."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name} must be comma-separated IP networks (CIDR) or addresses, got "
                                       f"{item!r} ({exc})") from None
    return tuple(networks)


def env_fernet_keys(name: str) -> tuple[str, ...]:
    """Comma-separated Fernet keys (32 bytes, URL-safe base64: `Fernet.generate_key()`). Unset: none."""
    import base64
    import binascii

    keys = env_list(name, [])
    for key in keys:
        try:
            valid = len(base64.urlsafe_b64decode(key.encode())) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            raise ImproperlyConfigured(f"{name} must be comma-separated Fernet keys (32 bytes, URL-safe base64), "
                                       f"one is not") from None
    return tuple(keys)


# scheme://host[:port], nothing more: what a browser sends in `Origin`.
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
                     r"(?P<host>[^\s/?#@:*\[\]]+|\[[0-9a-f:.]+\])"  # a name or address, or an IPv6 one in brackets
                     r"(?::(?P<port>\d{1,5}))?", re.IGNORECASE)


def env_origins(name: str) -> tuple[str, ...]:
    """Comma-separated web origins, each scheme://host[:port] as a browser sends it in `Origin` (no path, not even
    "/", no user, no wildcard). Unset or empty: none. Lower-cased, as browsers send them."""
    origins = []
    for item in env_list(name, []):
        found = _ORIGIN.fullmatch(item)
        if not found or (found["port"] is not None and not 0 < int(found["port"]) < 65536):
            raise ImproperlyConfigured(f"{name} must be comma-separated origins, each scheme://host[:port] "
                                       f"(e.g. http://localhost:3000), got {item!r}")
        origins.append(item.lower())
    return tuple(origins)


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def _langgraph_json(name: str) -> tuple[Path, dict] | None:
    """The langgraph.json-style file the variable names, read: (its path, its JSON object). Unset: None."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImproperlyConfigured(f"{name}: {raw!r} is not a readable langgraph.json-style file "
                                   f"({type(exc).__name__}: {exc})") from None
    if not isinstance(document, dict):
        raise ImproperlyConfigured(f"{name}: {raw!r} must hold a JSON object")
    return path, document


def env_graphs(name: str) -> dict[str, tuple[str, str]]:
    """A langgraph.json-style file named by the variable (`{"graphs": {"agent": "path/to/module.py:graph"}}`,
    paths relative to the file): {graph name: (absolute module path, attribute)}. Unset: none. A file that is
    missing or malformed, or that names a module that does not exist, stops start-up."""
    read = _langgraph_json(name)
    if read is None:
        return {}
    path, document = read
    graphs = document.get("graphs")
    if not isinstance(graphs, dict):
        raise ImproperlyConfigured(f"{name}: \"graphs\" in {str(path)!r} must be an object of name: \"file.py:attr\"")
    found = {}
    for graph_name, spec in graphs.items():
        module, _, attribute = spec.partition(":") if isinstance(spec, str) else ("", "", "")
        module_path = (path.parent / module).resolve()
        if not graph_name or not attribute or not module.endswith(".py") or not module_path.is_file():
            raise ImproperlyConfigured(f"{name}: graph {graph_name!r} must be \"path/to/module.py:attribute\" "
                                       f"naming an existing file, got {spec!r}")
        found[graph_name] = (str(module_path), attribute)
    return found


STORE_INDEX_KEYS = {"dims", "embed", "fields"}


def env_store_index(name: str, *, graphs: str) -> dict | None:
    """LangGraph's store index, `{"dims": 384, "embed": "provider:model", "fields": ["$"]}` (IndexConfig, with
    `embed` a "provider:model" text): the variable's JSON object, else the `store.index` of the langgraph.json-style
    file the `graphs` variable names, as LangGraph's server reads it. `fields` (JSON paths into an item's value)
    defaults to ["$"], the whole value. Unset: None, the store has no search by meaning."""
    raw = os.environ.get(name, "").strip()
    if raw:
        source = name
        try:
            index = json.loads(raw)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name} must be a JSON object ({exc})") from None
    else:
        read = _langgraph_json(graphs)
        store = (read[1].get("store") or {}) if read is not None else {}
        if not isinstance(store, dict):
            raise ImproperlyConfigured(f"{graphs}: \"store\" in {str(read[0])!r} must be an object")
        index = store.get("index")
        if index is None:
            return None
        source = f"{graphs}: store.index"
    if not isinstance(index, dict):
        raise ImproperlyConfigured(f"{source} must be a JSON object with dims, embed and fields")
    unknown = sorted(set(index) - STORE_INDEX_KEYS)
    if unknown:
        raise ImproperlyConfigured(f"{source}: unknown keys {unknown}; known: {sorted(STORE_INDEX_KEYS)}")
    dims, embed, fields = index.get("dims"), index.get("embed"), index.get("fields", ["$"])
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ImproperlyConfigured(f"{source}: dims must be a positive integer, got {dims!r}")
    provider, _, model = embed.partition(":") if isinstance(embed, str) else ("", "", "")
    if not provider or not model:
        raise ImproperlyConfigured(f"{source}: embed must be \"provider:model\" (e.g. "
                                   f"\"openai:text-embedding-3-small\"), got {embed!r}")
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) and f.strip() for f in fields):
        raise ImproperlyConfigured(f"{source}: fields must be a list of JSON paths (e.g. [\"$\"]), got {fields!r}")
    return {"dims": dims, "embed": embed, "fields": fields}
