"""B8's upstream: the project's OpenAI stub (tests/openai_stub.py) as a process of its own, answering every chat
completion at once with the same reply and usage, over keep-alive connections, keeping nothing.

    python -m bench.b8_stub --port N
"""
from __future__ import annotations

import argparse
import signal
import threading

from tests.openai_stub import OpenAIStub

REPLY = "Hello! How can I help you today?"
USAGE = {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}  # what every gateway must store per call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with OpenAIStub(port=args.port, keep_alive=True, keep_requests=False) as stub:
        stub.always(content=REPLY, usage=USAGE, model="gpt-4o-mini")
        stopped.wait()


if __name__ == "__main__":
    main()
