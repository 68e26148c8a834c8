"""The OpenAPI document is the contract: schemathesis fuzzes a real `tuneloop serve`
(uvicorn on 127.0.0.1, with a token) with every check, and finds nothing. Sessions the
fuzzer starts stay cheap: small caps, one at a time, and an OpenAI-compatible base URL
on a closed port (those sessions fail fast, as model errors)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_service import Server, free_port

TOKEN = "contract-token-123"


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tmp_path):
    pytest.importorskip("schemathesis", reason="schemathesis is not installed")
    srv = Server(tmp_path / "runs", "--token-env", "TL_TOKEN", "--max-budget", "3", "--max-iter-cap", "2000",
                 "--max-running", "1", "--max-queued", "4",
                 env={"TL_TOKEN": TOKEN, "OPENAI_API_KEY": "sk-contract-000000000",
                      "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    srv.auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        cli = shutil.which("schemathesis") or shutil.which("st")
        cmd = [cli] if cli else [sys.executable, "-m", "schemathesis.cli"]
        r = subprocess.run([*cmd, "run", srv.url + "/openapi.json", "--checks", "all", "--max-examples", "10",
                            "--seed", "1", "--request-timeout", "30", "-H", f"Authorization: Bearer {TOKEN}"],
                           capture_output=True, text=True, timeout=900,
                           env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.contract_hooks",
                                "PYTHONPATH": str(Path(__file__).parent.parent)})
    finally:
        srv.stop()
    # (a warning, such as "Missing test data" for an id it cannot guess, is not a failure)
    assert r.returncode == 0 and "FAILURES" not in r.stdout and "ERRORS" not in r.stdout, r.stdout[-4000:]
    assert TOKEN not in srv.proc.stdout.read()
