"""`python -m runner.dashboard SWEEP_DIR` serves the sweep's study: its JSON API lists it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def test_dashboard_serves_the_sweeps_study(tmp_path):
    study = optuna.create_study(study_name="lenet_digits", storage=f"sqlite:///{tmp_path}/optuna.db",
                                direction="maximize")
    study.enqueue_trial({"lr": 0.01})
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    study.tell(trial, 91.5)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "runner.dashboard", str(tmp_path), "--port", str(port)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                studies = get(port, "/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.time() < deadline, "the dashboard did not answer within 120 s"
                time.sleep(0.3)
        [summary] = studies
        assert summary["study_name"] == "lenet_digits"
        [best] = get(port, f"/api/studies/{summary['study_id']}")["best_trials"]
        assert best["values"] == [91.5] and best["params"][0]["name"] == "lr"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_dashboard_without_a_study_says_what_to_pass(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runner.dashboard", str(tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no ") and "--storage" in proc.stderr
