"""Screenshots of what a researcher sees of a sweep: the MLflow experiment's run list, one
child run's metrics, the optuna-dashboard study page and its trial list (user attributes),
taken from the servers `sweeper ui` starts, with Debian's headless chromium. Why a script:
the UIs are single-page apps whose look no HTTP test checks; before an issue about them is
resolved, someone looks at these.

    python3 tools/screenshots.py --store mlruns [--sweep NAME] [--out screenshots/]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeper import ui  # the checkout's, when run from it
from sweeper.errors import SweeperError

WINDOW = "1600,1000"
# virtual time for the single-page apps to fetch and draw: at 15 s MLflow's metric charts
# were still spinners on a loaded 2-core machine
RENDER_BUDGET_MS = 40000


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def pages(servers: ui.Servers, sweep: str | None) -> dict[str, str]:
    """File name -> URL of each page to capture, for `sweep` (default: the newest)."""
    experiments = _get(f"{servers.mlflow.url}/api/2.0/mlflow/experiments/search?"
                       "max_results=100")["experiments"]
    studies = _get(f"{servers.optuna.url}/api/studies")["study_summaries"]
    names = [s["study_name"] for s in studies]
    sweep = sweep or max(studies, key=lambda s: s.get("datetime_start") or "")["study_name"]
    if sweep not in names:
        raise SweeperError(f"no sweep named {sweep!r} in the store (sweeps: {', '.join(names)})")
    experiment = next(e["experiment_id"] for e in experiments if e["name"] == sweep)
    runs = _post(f"{servers.mlflow.url}/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment], "max_results": 100,
                  "filter": "tags.`sweeper.role` = 'trial'"}).get("runs", [])
    if not runs:
        raise SweeperError(f"sweep {sweep!r} has no trial run logged in MLflow")
    child = runs[0]["info"]["run_id"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == sweep)
    view = "?workflowType=machine_learning"  # else MLflow opens its GenAI view
    return {
        "mlflow-runs.png": f"{servers.mlflow.url}/#/experiments/{experiment}/runs{view}",
        "mlflow-run-metrics.png": f"{servers.mlflow.url}/#/experiments/{experiment}/runs/"
                                  f"{child}/model-metrics{view}",
        "optuna-study.png": f"{servers.optuna.url}/dashboard/studies/{study_id}",
        "optuna-trials.png": f"{servers.optuna.url}/dashboard/studies/{study_id}/trials",
    }


def screenshot(url: str, target: Path, browser: str,
               budget_ms: int = RENDER_BUDGET_MS) -> None:
    with tempfile.TemporaryDirectory() as profile:  # no state carried between pages
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--user-data-dir={profile}",
                        f"--window-size={WINDOW}", f"--virtual-time-budget={budget_ms}",
                        f"--screenshot={target}", url],
                       check=True, capture_output=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, default=Path("mlruns"))
    parser.add_argument("--sweep", help="default: the store's newest sweep")
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--browser", default="chromium")
    parser.add_argument("--budget-ms", type=int, default=RENDER_BUDGET_MS,
                        help="virtual time each page gets to render (raise it on a loaded "
                        "machine: charts still spinning)")
    args = parser.parse_args(argv)
    browser = shutil.which(args.browser)
    if browser is None:
        print(f"screenshots: {args.browser} not found (apt-get install chromium)",
              file=sys.stderr)
        return 2
    try:
        servers = ui.start(args.store)
    except SweeperError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, url in pages(servers, args.sweep).items():
            screenshot(url, args.out / name, browser, args.budget_ms)
            print(f"{args.out / name}  <-  {url}")
    except SweeperError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 2
    finally:
        servers.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
