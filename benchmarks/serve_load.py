"""Requests per second and latency of `medxfer serve` over real HTTP on loopback, run by hand:

    python benchmarks/serve_load.py MODEL [--requests 200] [--clients 8] [--engine auto|torch|onnxruntime]
        [--max-batch 8] [--batch-wait-ms 2]

Starts the service in this process (uvicorn, one worker) and sends PNG uploads of bundled
sample images from ``--clients`` threads; reports requests/s and the 50th/95th percentile
latency, and that every answer was 200.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import uvicorn

from medxfer.data import bundled_sample
from medxfer.serve import create_app


def _post(url, data):
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
        return r.status, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    a = ap.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(a.model, engine=a.engine, max_batch=a.max_batch, batch_wait_ms=a.batch_wait_ms)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    url = f"http://127.0.0.1:{port}/predict"
    files = [p.read_bytes() for p in sorted((bundled_sample() / "images").glob("*.png"))[:16]]
    _post(url, files[0])  # warm-up
    t = time.perf_counter()
    with ThreadPoolExecutor(a.clients) as pool:
        res = list(pool.map(lambda i: _post(url, files[i % len(files)]), range(a.requests)))
    wall = time.perf_counter() - t
    lat = np.array([r[1] for r in res])
    pred = app.state.predictor
    print(json.dumps({"engine": pred.engine, "max_batch": a.max_batch, "batch_wait_ms": a.batch_wait_ms,
                      "batch_sizes": pred.batch_sizes, "requests": a.requests, "clients": a.clients,
                      "all_200": all(r[0] == 200 for r in res),
                      "requests_per_s": round(a.requests / wall, 1),
                      "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1),
                      "p95_ms": round(1000 * float(np.percentile(lat, 95)), 1)}, indent=1))
    server.should_exit = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
