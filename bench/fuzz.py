"""Fuzzing with schemathesis: requests generated from the service's own OpenAPI document.

    python -m bench.fuzz --examples 50           # against a fresh fashion-serve
    python -m bench.fuzz --url http://127.0.0.1:8000

Every answer must be a documented status with a body that matches its schema, and no 5xx.
tests/app/test_fuzz.py runs the same checks in-process on every CI run; this runs the
schemathesis command line against a real server, for docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.server_process import ServerProcess, free_port

# schemathesis's own names. Beyond the four that say "no 5xx, and every answer is as
# documented", invalid input must be refused and unknown methods must get a 405.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
)


def with_file_samples(openapi: dict[str, Any]) -> dict[str, Any]:
    """A copy of the document with every upload field also marked ``format: binary``.

    FastAPI writes OpenAPI 3.1, where an upload is ``contentMediaType: application/octet-stream``;
    for that schemathesis draws arbitrary strings only, so no request would carry an image
    and no 200 answer would be checked. For ``format: binary`` it also draws small valid PNG,
    JPEG, GIF and WebP files.
    """
    document = copy.deepcopy(openapi)

    def mark(schema: Any) -> None:
        if isinstance(schema, dict):
            if schema.get("contentMediaType") == "application/octet-stream":
                schema.setdefault("format", "binary")
            for value in schema.values():
                mark(value)
        elif isinstance(schema, list):
            for value in schema:
                mark(value)

    mark(document.get("components", {}))
    return document


@dataclass
class FuzzResult:
    examples_per_operation: int  # the --max-examples asked for (the coverage phase adds its own)
    generated: int  # requests schemathesis sent, all phases together
    operations: int
    failures: list[str]  # one line per kind of failure: code, title, count, operations
    errors: list[str]
    valid_rates: dict[str, Any] = field(default_factory=dict)  # per operation: accepted / rejected
    command: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors


def run_cli(base_url: str, examples: int, workdir: Path, seed: int = 0) -> FuzzResult:
    """``schemathesis run`` against ``base_url`` with ``examples`` per operation, seeded."""
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=30) as response:
        openapi = json.load(response)
    schema_path = workdir / "openapi.json"
    schema_path.write_text(json.dumps(with_file_samples(openapi)))
    report_path = workdir / "schemathesis.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(schema_path), "--url", base_url,
        "--checks", ",".join(CHECKS), "--max-examples", str(examples), "--seed", str(seed),
        "--workers", "1", "--report", "json", "--report-json-path", str(report_path),
    ]  # fmt: skip
    # In workdir: schemathesis keeps a cache (.schemathesis/) in its working directory.
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=workdir)
    if not report_path.exists():
        raise RuntimeError(f"schemathesis wrote no report:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads(report_path.read_text())
    failures = [
        f"{item['code']} {item['title']}: {item['count']} on {', '.join(item['operations'])}"
        for item in report["failures"]
    ]
    return FuzzResult(
        examples_per_operation=examples,
        generated=report["test_cases"]["generated"],
        operations=report["operations"]["tested"],
        failures=failures,
        errors=[json.dumps(error) for error in report["errors"]],
        valid_rates=report.get("valid_rates", {}),
        command="schemathesis " + " ".join(command[3:]).replace(str(workdir), "<tmp>"),
    )


def fuzz_fresh_server(model_path: Path, examples: int, workdir: Path) -> FuzzResult:
    """Start ``fashion-serve`` on ``model_path`` and fuzz it."""
    port = free_port()
    env = {"FASHION_MODEL_PATH": str(model_path), "FASHION_DEVICE": "cpu", "FASHION_LOG_LEVEL": "warning"}
    server = ServerProcess(
        "fashion-serve", ["-m", "app.serve", "--port", str(port)], port, workdir / "server.log", env
    )
    try:
        server.wait_ready(timeout=300)
        return run_cli(f"http://127.0.0.1:{port}", examples, workdir)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    from bench.soak import SHIPPED_MODEL

    parser = argparse.ArgumentParser(
        description="Fuzz the API from its OpenAPI document with schemathesis",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--examples", type=int, default=50, help="generated requests per operation")
    parser.add_argument("--url", default=None, help="a running server's base URL; else one is started")
    parser.add_argument(
        "--model", type=Path, default=SHIPPED_MODEL, help="the checkpoint a started server serves"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            result = run_cli(args.url.rstrip("/"), args.examples, Path(tmp))
        else:
            result = fuzz_fresh_server(args.model, args.examples, Path(tmp))
    failures = "; ".join(result.failures + result.errors) or "none"
    print(f"{result.generated} requests over {result.operations} operations; failures: {failures}")
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
