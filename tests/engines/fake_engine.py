"""A tiny stand-in for an inference engine: a real HTTP server process for serve's tests.

It takes vLLM's flags (`--port`, `--served-model-name`, `--lora-modules NAME=PATH ...`) and
LLaMA-Factory's environment (API_PORT, API_KEY, API_MODEL_NAME), ignores the rest, and
answers `/v1/models` and `/v1/chat/completions`. The base echoes the prompt; an adapter
answers differently, unless named in `--fake-same`. Test-only flags start with `--fake-`.
Standard library only: it runs under any Python.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def parse(argv: list[str]) -> dict[str, Any]:
    """Return the flags this fake understands; unknown flags and their values are skipped."""
    opts: dict[str, Any] = {
        "port": int(os.environ.get("API_PORT", "8000")),
        "host": os.environ.get("API_HOST", "127.0.0.1"),
        "base": os.environ.get("API_MODEL_NAME", "base"),
        "loras": [],
        "key": os.environ.get("VLLM_API_KEY") or os.environ.get("API_KEY"),
        "delay": 0.0,
        "same": [],
        "any_name": False,
        "child_pidfile": None,
        "crash": False,
        "exit_after": None,
        "ignore_term": False,
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if a == "--port":
            opts["port"] = int(nxt)
        elif a == "--host":
            opts["host"] = nxt
        elif a == "--served-model-name":
            opts["base"] = nxt
        elif a == "--lora-modules":
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                opts["loras"].append(argv[j].split("=", 1)[0])
                j += 1
            i = j
            continue
        elif a == "--fake-delay":
            opts["delay"] = float(nxt)
        elif a == "--fake-same":
            opts["same"] = nxt.split(",")
        elif a == "--fake-any-name":
            opts["any_name"] = True
            i += 1
            continue
        elif a == "--fake-child-pidfile":
            opts["child_pidfile"] = nxt
        elif a == "--fake-crash":
            opts["crash"] = True
            i += 1
            continue
        elif a == "--fake-exit-after":
            opts["exit_after"] = float(nxt)
        elif a == "--fake-ignore-term":
            opts["ignore_term"] = True
            i += 1
            continue
        i += 1
    return opts


def make_handler(opts: dict[str, Any]) -> type[BaseHTTPRequestHandler]:
    """Return a request handler class answering as the engine `opts` describes."""
    names = [opts["base"], *opts["loras"]]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            sys.stdout.write("fake-engine: " + (format % args) + "\n")

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if not opts["key"]:
                return True
            if self.headers.get("Authorization") == f"Bearer {opts['key']}":
                return True
            self._send(401, {"error": "Unauthorized"})
            return False

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": opts["base"], "object": "model", "parent": None}]
                data += [
                    {"id": n, "object": "model", "parent": opts["base"]} for n in opts["loras"]
                ]
                self._send(200, {"object": "list", "data": data})
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            model = body.get("model")
            if model not in names and not opts["any_name"]:
                self._send(404, {"error": {"message": f"The model `{model}` does not exist."}})
                return
            prompt = body["messages"][-1]["content"]
            if model in opts["loras"] and model not in opts["same"]:
                text = f"{model} says {prompt[::-1]}"
            else:
                text = f"echo: {prompt}"
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                },
            )

    return Handler


def main() -> None:
    """Start the fake engine as the command line says and serve until stopped."""
    opts = parse(sys.argv[1:])
    print(f"fake-engine: starting with {sys.argv[1:]}", flush=True)
    if opts["crash"]:
        print("fake-engine: boom: cannot load the model", flush=True)
        sys.exit(1)
    if opts["child_pidfile"]:
        # A worker like vLLM's engine core: same process group, default signal handling.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(opts["child_pidfile"], "w") as f:
            f.write(str(child.pid))
    if opts["ignore_term"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(opts["delay"])
    server = ThreadingHTTPServer((opts["host"], opts["port"]), make_handler(opts))
    print(f"fake-engine: listening on {opts['host']}:{opts['port']}", flush=True)
    if opts["exit_after"] is not None:
        server.timeout = 0.1
        deadline = time.monotonic() + opts["exit_after"]
        while time.monotonic() < deadline:
            server.handle_request()
        print("fake-engine: exiting on purpose", flush=True)
        sys.exit(3)
    server.serve_forever()


if __name__ == "__main__":
    main()
