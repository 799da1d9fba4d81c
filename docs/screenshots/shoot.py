"""Screenshots of a study's MLflow runs and TensorBoard HParams table with headless Chromium (see
README.md here). Run with a Python that has aiohttp (the separate venv that holds the full mlflow):

    python docs/screenshots/shoot.py --mlflow http://127.0.0.1:5055 --tensorboard http://127.0.0.1:6066 \\
        --study iris-tracking --out docs/screenshots
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cdp import Browser

EXPANDER = "button[data-component-id*=runnamecellrenderer]"  # the + before a parent run's name
CLOSE_ASSISTANT = "document.querySelector('button[aria-label=Close]')?.click()"
#: the text of a page, shadow roots included (TensorBoard's Polymer plugins)
DEEP_TEXT = ("(function t(n){let s='';if(n.shadowRoot)s+=t(n.shadowRoot);for(const c of n.children||[])s+=t(c);"
             "if(n.nodeType===1&&!n.children.length)s+=' '+(n.textContent||'');return s})(document.body)")
#: click the innermost element whose text is exactly the argument
CLICK_TEXT = ("((t) => { const e = Array.from(document.querySelectorAll('body *'))"
              ".filter(e => (e.innerText || '').trim() === t).pop(); if (e) e.click(); return !!e; })")
CLICK_BOX = """((label) => {
  const node = Array.from(document.querySelectorAll('.du-bois-light-tree-treenode')).find(n =>
    (n.querySelector('.du-bois-light-tree-title')?.textContent || '').trim().replace(/ \\(\\d+\\)$/, '') === label);
  const box = node && node.querySelector('.du-bois-light-tree-checkbox');
  if (box) box.click();
  return !!box;
})"""  # a box of the Columns menu (Ant Design's tree), by its label without the "(N)" count


def runs(mlflow: str, study: str) -> tuple[str, dict[str, dict]]:
    """(experiment id, run name -> run) of a study, through MLflow's REST API."""
    q = urllib.parse.urlencode({"experiment_name": study})
    with urllib.request.urlopen(f"{mlflow}/api/2.0/mlflow/experiments/get-by-name?{q}") as r:
        exp = json.load(r)["experiment"]["experiment_id"]
    body = json.dumps({"experiment_ids": [exp], "max_results": 1000}).encode()
    req = urllib.request.Request(f"{mlflow}/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        found = json.load(r)["runs"]
    return exp, {x["info"]["run_name"]: x for x in found}


def is_best(run: dict) -> bool:
    return any(t["key"] == "hpsearch.best" and t["value"] == "true" for t in run["data"].get("tags", []))


async def shoot(a: argparse.Namespace) -> None:
    exp, by_name = runs(a.mlflow, a.study)
    trials = {k: v["info"]["run_id"] for k, v in sorted(by_name.items()) if k.startswith("trial-")}
    best = next(v["info"]["run_id"] for v in by_name.values() if is_best(v))
    out = Path(a.out)
    listed = " && ".join(f"document.body.innerText.includes('{n}')" for n in trials)
    with tempfile.TemporaryDirectory(prefix="shots-chrome-") as profile:
        async with Browser(a.port, profile) as b:
            await b.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1,
                         mobile=False)
            # 1. the experiment's runs: the study's parent run, expanded, its trial runs nested under it
            await b.goto(f"{a.mlflow}/#/experiments/{exp}/runs", "document.body.innerText.includes('matching runs')")
            await b.until(f"document.querySelector('{EXPANDER}')")
            await b.js(CLOSE_ASSISTANT)
            await b.js("document.querySelector('button[aria-label=\"Toggle sidebar\"]')?.click()")  # width
            await b.js("document.querySelector('[data-testid=column-selection-dropdown]').click()")
            await b.until(f"{CLICK_BOX}('Dataset')")
            for label in ("Source", "Models", "Metrics", "Parameters"):
                assert await b.js(f"{CLICK_BOX}('{label}')"), label
            await b.js("document.querySelector('[data-testid=column-selection-dropdown]').click()")
            await b.js(f"document.querySelector('{EXPANDER}').click()")
            await b.until(listed)
            await b.shot(out / "mlflow-runs.png")
            # 2. the same runs as charts: every trial's per-epoch curves, one chart per metric
            await b.goto(f"{a.mlflow}/#/experiments/{exp}/runs?compareRunsMode=CHART",
                         "document.body.innerText.includes('val_accuracy')")
            await b.until(listed)
            await b.shot(out / "mlflow-charts.png", 4)
            # 3. the best trial's run: its metric curves
            await b.goto(f"{a.mlflow}/#/experiments/{exp}/runs/{best}/model-metrics",
                         "document.body.innerText.includes('val_accuracy')")
            await b.shot(out / "mlflow-best-run-metrics.png", 4)
            # 4. the same run's artifacts: its model (tracking.log_models)
            await b.goto(f"{a.mlflow}/#/experiments/{exp}/runs/{best}/artifacts",
                         "document.body.innerText.includes('model')")
            await b.js(CLOSE_ASSISTANT)
            await b.js(f"{CLICK_TEXT}('model')")  # open the folder
            await b.until("document.body.innerText.includes('model.keras')")
            await b.js(f"{CLICK_TEXT}('preprocess.json')")  # a file the page previews
            await b.shot(out / "mlflow-best-run-model.png", 3)
            # 5. MLflow's compare-runs page of the trial runs (parallel coordinates)
            q = urllib.parse.urlencode({"runs": json.dumps(list(trials.values())), "experiments": json.dumps([exp])})
            await b.goto(f"{a.mlflow}/#/compare-runs?{q}", listed)
            await b.js(CLOSE_ASSISTANT)
            await b.shot(out / "mlflow-compare-runs.png", 4)
            # 6. TensorBoard's HParams table of the same study
            await b.goto(f"{a.tensorboard}/#hparams", f"{DEEP_TEXT}.includes('{a.study}/{len(trials) - 1}')", 120)
            await b.shot(out / "tensorboard-hparams.png", 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mlflow", required=True)
    p.add_argument("--tensorboard", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=9333, help="Chromium's remote-debugging port")
    asyncio.run(shoot(p.parse_args()))


if __name__ == "__main__":
    main()
