"""Start the real ``mlsys serve`` process on a free port and talk to it over loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT


class Server:
    """``mlsys serve ... --port 0 --json`` as a process; the URL comes from its startup line.

    stderr goes to a file (the access log can be long; a pipe nobody reads would block it).
    """

    def __init__(self, *args: str, env: dict | None = None, cwd: str | os.PathLike | None = None, wait: float = 120):
        self.err_path = Path(cwd or ".") / f".serve-{os.getpid()}-{time.monotonic_ns()}.err"
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "mlsys_cli", "serve", *map(str, args), "--port", "0", "--json"],
                                     stdout=subprocess.PIPE, stderr=self._err, cwd=cwd or ROOT,
                                     env={**os.environ, "NO_COLOR": "1", **(env or {})})
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=wait)
            raise RuntimeError(f"serve did not start (exit {self.proc.returncode}): {self.stderr()}")
        self.info = json.loads(line)
        self.url = self.info["url"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.err_path.read_text(errors="replace")

    def events(self, kind: str) -> list[dict]:
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == kind:
                    out.append(record)
        return out

    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def predict(self, records, headers: dict | None = None) -> tuple[int, dict]:
        status, _, body = self.request("POST", "/predict", records, headers)
        return status, json.loads(body)

    def metrics(self, headers: dict | None = None) -> str:
        status, _, body = self.request("GET", "/metrics", headers=headers)
        assert status == 200
        return body.decode()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            self._err.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._err.close()
        self.err_path.unlink(missing_ok=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        series, _, rest = head.partition("{")
        if series != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def json_records(df) -> list[dict]:
    """Rows as a JSON client sends them (ISO dates, null for missing)."""
    return json.loads(df.to_json(orient="records", date_format="iso", date_unit="s"))


def write_registry(root: Path, versions: dict[str, Path], champion: str) -> None:
    """A registry laid out as CONTRACTS.md fixes it (the retrain helper owns the writer)."""
    import shutil

    (root / "versions").mkdir(parents=True, exist_ok=True)
    (root / "registry.json").write_text(json.dumps({"format": "mlsys-registry", "version": 1}))
    for version, bundle in versions.items():
        target = root / "versions" / version / "model.mlsys"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle, target)
    set_champion(root, champion)


def set_champion(root: Path, version: str) -> None:
    from mlsys_cli.fsutil import atomic_write_text, sha256_file

    bundle = f"versions/{version}/model.mlsys"
    atomic_write_text(root / "champion.json", json.dumps({"version": version, "bundle": bundle,
                                                          "sha256": sha256_file(root / bundle)}))
