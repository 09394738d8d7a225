"""Seen as a person sees it: a headless chromium opens the MLflow UI of a tracking server that real
workflow jobs wrote to, and the `snakemake --report` HTML of the same run, and checks that the
experiment's runs, a metric chart and a report figure render. It reads the rendered DOM
(`chromium --headless --dump-dom`) and keeps screenshots (`--screenshot`) for a person to look at:
in the test's tmp folder, or in $MODECONN_SCREENSHOTS when set.

Opt-in (`bash scripts/test.sh -m browser`, a few minutes): needs chromium (Debian: apt-get install
chromium); the MLflow server and the workflow come from this environment. Runs the smoke preset's
`seeds` target (data, two training populations, three interpolations, the seeds report) with
`tracking.uri` pointing at the server.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

from mlflow_server import start, stop, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "params.yaml", "workflow", "config", "profiles", "dvc.yaml"]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)

# The report has no URLs for its views: this script does what a person does (open the "Seeds"
# category, press the eye button of the interpolation figure) and records what the page then shows.
CLICK = """
<script>
(function () {
  const mark = (text) => document.body.setAttribute("data-figure", text);
  const link = (text) => [...document.querySelectorAll("a")].find((a) => a.textContent.trim() === text);
  setTimeout(() => {
    const category = link("Seeds") || link("Results");  // a report of one category lists it as "Results"
    if (!category) return mark("no Seeds category");
    category.click();
    setTimeout(() => {
      const row = [...document.querySelectorAll("tr")].find((r) => r.textContent.includes("interpolation figure"));
      if (!row) return mark("no interpolation figure row");
      row.querySelector('a[iconname="eye"]').click();
      setTimeout(() => {
        const img = document.querySelector("#app img:not(.h-4)");
        mark(img ? `${img.naturalWidth}x${img.naturalHeight} ${img.complete} ${img.src.slice(0, 15)}` : "no image");
      }, 1000);
    }, 500);
  }, 500);
})();
</script>
"""


def chromium(*args: str, budget_ms: int = 30000) -> str:
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--window-size=1400,900", f"--virtual-time-budget={budget_ms}", *args]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def dump_until(page: str, ready, tries: int = 4) -> str:
    """The rendered DOM of a page that fetches its data: load it again, with more time, until
    `ready(dom)` (a busy machine may not have answered every request within the first budget)."""
    for attempt in range(tries):
        dom = chromium("--dump-dom", page, budget_ms=30000 * (attempt + 1))
        if ready(dom):
            break
    return dom


def env() -> dict[str, str]:
    return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("MODECONN_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An MLflow server (SQLite, loopback) and a workflow run of the smoke `seeds` target tracked by it."""
    home = tmp_path_factory.mktemp("browser")
    server, url, log = start(home, env())
    try:
        wait_healthy(url, server, log, timeout=180)
        work = home / "work"
        work.mkdir()
        for name in COPY:
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
        (work / "server.yaml").write_text(f'tracking: {{uri: "{url}", experiment: browser}}\n')
        configs = ["--configfile", "config/smoke.yaml", "server.yaml"]
        run = subprocess.run(["snakemake", "seeds", "--cores", "2", *configs], cwd=work, env=env(), capture_output=True, text=True, timeout=1800)
        assert run.returncode == 0, run.stderr[-5000:]
        report = subprocess.run(["snakemake", "seeds", "--report", "report.html", *configs], cwd=work, env=env(), capture_output=True, text=True, timeout=600)
        assert report.returncode == 0, report.stderr[-5000:]
        yield {"url": url, "work": work, "report": work / "report.html"}
    finally:
        stop(server)


def test_mlflow_ui_shows_runs_and_a_metric_chart(site, shots):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=site["url"])
    exp = client.get_experiment_by_name("browser")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert any(r.info.run_name.startswith("train seeds") for r in parents), [r.info.run_name for r in runs]

    # the experiment's runs table (the "Model training" view of the experiment)
    page = f"{site['url']}/#/experiments/{exp.experiment_id}/runs"
    dom = html.unescape(dump_until(page, lambda d: "matching runs" in d))
    chromium(f"--screenshot={shots / 'mlflow_runs.png'}", page)
    shown = [r.info.run_name for r in parents if r.info.run_name in dom]
    assert len(shown) == len(parents), (sorted(r.info.run_name for r in parents), dom[-2000:])
    assert re.search(rf"<strong>{len(runs)}</strong> matching runs", dom), "the runs count is not shown"

    # a metric chart: a run with a per-epoch history, on its "Model metrics" tab
    def history(run):
        for key in sorted(run.data.metrics):
            if len(client.get_metric_history(run.info.run_id, key)) > 1:
                return key
        return None

    # a trained network's per-epoch curve if there is one (children of a population run)
    ordered = sorted(runs, key=lambda r: "mlflow.parentRunId" not in r.data.tags)
    run, key = next((r, k) for r in ordered if (k := history(r)))
    page = f"{site['url']}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}/model-metrics"
    dom = dump_until(page, lambda d: 'class="js-line"' in d)
    chromium(f"--screenshot={shots / 'mlflow_metric_chart.png'}", page)
    assert key in dom, dom[-2000:]
    assert dom.count('class="main-svg"') >= 2, "no plotly chart rendered"  # plotly draws each chart in <svg class="main-svg">
    assert re.search(r'class="js-line"[^>]*d="M[0-9.]+,[0-9.]+L', dom), "the chart has no line"
    assert (shots / "mlflow_metric_chart.png").stat().st_size > 10_000


def test_snakemake_report_shows_a_figure(site, shots):
    report = site["report"]
    dom = chromium("--dump-dom", report.as_uri())
    chromium(f"--screenshot={shots / 'report_home.png'}", report.as_uri())
    assert "Snakemake" in dom and "Workflow" in dom and "report_seeds" in dom  # the app rendered its menu and rule graph
    clicked = report.with_name("report_clicked.html")
    clicked.write_text(report.read_text() + CLICK)
    dom = dump_until(clicked.as_uri(), lambda d: "data-figure=" in d)
    chromium(f"--screenshot={shots / 'report_figure.png'}", clicked.as_uri())
    shown = re.search(r'data-figure="([^"]*)"', dom)
    assert shown, "the click script did not run"
    size, complete, src = shown.group(1).split(" ", 2) if shown.group(1)[0].isdigit() else ("", "", shown.group(1))
    assert complete == "true" and src.startswith("data:image/png"), shown.group(1)
    width, height = map(int, size.split("x"))
    assert width > 300 and height > 200, size  # the interpolation figure, decoded and laid out
    assert (shots / "report_figure.png").stat().st_size > 20_000
