"""A client of `tuneloop serve`'s ask/tell studies: the Python Study's interface over
HTTP, on the standard library only (urllib), so a training script needs nothing else.

    client = Client("http://127.0.0.1:8000", token=None)
    study = client.create_study({"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True}},
                                method="tpe", budget=20)
    for _ in range(20):
        trial = study.ask()
        study.tell(trial, train(trial.params))      # a number, a dict with "value", or failed=True
    study.close(), study.best

As with the Python Study: several trials may be out at once (parallel workers, each
asking and telling), a trial is told once; misuse, an ask after the budget and a study
that ended are a StudyError (the server's 409). Any other refusal
is a ServiceError with the server's status and detail. `ask` asks again while the server
answers 202 (the method is still thinking), until `timeout` if one is given.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Literal

from tuneloop.evaluation.study import StudyError, Trial
from tuneloop.tools.errors import TuneloopError
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.tasks import TaskOutcome, outcome_of
from tuneloop.tools.trials import TrialResult


class ServiceError(TuneloopError):
    """The server refused a request (or could not be reached): its status and detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else str(detail))
        self.status = status
        self.detail = detail


class Client:
    """A `tuneloop serve` at `url` (`token`: its bearer token, when it has one)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout  # per request: longer than the server's ask wait (5 s)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
        """(status, headers, the JSON body) of one request; a status >= 400 raises
        StudyError (409) or ServiceError."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                status, got, raw = r.status, dict(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            status, got, raw = e.code, dict(e.headers.items()), e.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise ServiceError(0, f"cannot reach {self.url}: {reason}") from None
        try:
            payload = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            payload = raw.decode(errors="replace")
        if status >= 400:
            detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
            if status == 409:
                raise StudyError(str(detail))
            raise ServiceError(status, detail)
        return status, got, payload

    def create_study(self, space: SearchSpace | dict[str, Any], method: str = "tpe", budget: int = 20,
                     seed: int = 0, model: str = "local", prompt: str | None = None,
                     direction: Literal["minimize", "maximize"] = "minimize", description: str = "",
                     name: str = "study", **extra: Any) -> RemoteStudy:
        """A new study on the server (`extra`: base_url, api_key_env for an OpenAI-compatible
        model); its method starts proposing at once."""
        body = {"space": SearchSpace.parse(space).model_dump(mode="json"), "method": method, "budget": budget,
                "seed": seed, "model": model, "prompt": prompt, "direction": direction, "description": description,
                "name": name, **extra}
        _, _, created = self.request("POST", "/api/studies", body)
        return RemoteStudy(self, created["id"])

    def study(self, study_id: str) -> RemoteStudy:
        """A study the server already has (one this client or another created)."""
        return RemoteStudy(self, study_id)

    def studies(self) -> list[dict[str, Any]]:
        """Every study the server lists: id, name, method, status, budget, trials, best, created."""
        return list(self.request("GET", "/api/studies")[2]["studies"])


class RemoteStudy:
    """An ask/tell study on a server: `ask`, `tell`, `close`, `trials` and `best`, as the
    Python Study's."""

    def __init__(self, client: Client, study_id: str) -> None:
        self.client = client
        self.id = study_id

    def ask(self, timeout: float | None = None) -> Trial:
        """The next configuration to evaluate (waits for the method to propose)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status, headers, body = self.client.request("POST", f"/api/studies/{self.id}/ask")
            if status == 200:
                return Trial(id=body["trial"], params=body["params"])
            wait = float(headers.get("Retry-After") or headers.get("retry-after") or 1)
            if deadline is not None and time.monotonic() + wait > deadline:
                raise StudyError(f"the method proposed nothing within {timeout} s")
            time.sleep(wait)

    def tell(self, trial: Trial | int, value: float | dict[str, Any] | None = None, *, failed: bool = False) -> None:
        """The result of `trial`: a number, a dict of `value` and metrics, or failed=True. A
        NaN or a value that is not a number is a failed trial (read here as the Python
        Study reads it, then sent)."""
        out = TaskOutcome(status="failed", value=None, error="told failed") if failed else outcome_of(value)
        # outcome_of leaves only finite numbers (NaN metrics as None): JSON carries them all
        body: dict[str, Any] = {"trial": trial.id if isinstance(trial, Trial) else int(trial), "state": out.status,
                                "value": out.value}
        if out.metrics:
            body["metrics"] = out.metrics
        if out.error is not None:
            body["error"] = out.error[-2000:]
        self.client.request("POST", f"/api/studies/{self.id}/tell", body)

    def close(self) -> str:
        """End the study; how its run ended (`budget_spent`, or `interrupted` when closed
        early). While the method finishes its current proposal (the server's 202), waits
        for it, at most the client's timeout."""
        status, _, body = self.client.request("POST", f"/api/studies/{self.id}/close")
        deadline = time.monotonic() + self.client.timeout
        while status == 202 and time.monotonic() < deadline:
            time.sleep(0.5)
            status, _, body = self.client.request("POST", f"/api/studies/{self.id}/close")
        if body.get("stop_reason") is None:
            raise ServiceError(status, f"study {self.id} is still closing after {self.client.timeout:g} s")
        return str(body["stop_reason"])

    def detail(self) -> dict[str, Any]:
        """What GET /api/studies/{id} answers: status, trials, best, the trial out."""
        return dict(self.client.request("GET", f"/api/studies/{self.id}")[2])

    @property
    def status(self) -> str:
        return str(self.detail()["status"])

    @property
    def trials(self) -> list[TrialResult]:
        """The charged trials so far, as the study's trace records them (in order)."""
        return [TrialResult.model_validate(t) for t in self.detail()["trials"]]

    @property
    def best(self) -> TrialResult | None:
        return min(self.trials, key=lambda t: t.score, default=None)
