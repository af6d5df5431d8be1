"""Screenshots of the pages a reviewer opens first, from a real ``mlflow server`` in a real headless Chromium.

A tiny CPU fit (synthetic archive, 2 epochs at 32 px) logs to an ``mlflow server`` on 127.0.0.1 and registers
version 1, which ``medres promote`` then makes ``@champion``. Chromium (headless, driven over the DevTools protocol)
opens the run overview, the ``train`` dataset's drawer on it, and the registered version's page, waits until the
MLflow UI (a JavaScript app) has rendered them, and saves each page as a PNG and its visible text as a .txt.

Checks (exit 1 if one fails): the run page lists the three splits as datasets with their contexts and shows no
``data.<split>.<finding>.<state>`` tags; the dataset drawer shows the counts profile and the hashed source;
the version page shows the decision tags and none of the old ``medres.promotion.*`` evidence or threshold tags.

Needs Chromium (Debian: ``apt-get install chromium``). About 3 minutes on 2 CPU cores, most of it the fit:

    .venv/bin/python benchmarks/run_page_screenshots.py --out run_page

Measured when written (MLflow 3.17.2, Chromium 156, 2 shared CPU cores; fit 160-220 s): the run page's "About
this run" panel showed ``Datasets: train (09a0e239040eddf3) Training +2`` (the "+2" popover: ``val (c4a0d8608f0db849)
Validation``, ``test (3ac3eef0dd914ce4) Testing``) and ``Tags``: ``medres.version``, ``medres.git.dirty``,
``medres.parameters``, ``medres.world_size``, ``data.fingerprint`` (MLflow hides its own ``mlflow.*``); the train
drawer "Data details … 3 datasets used" showed ``samples: 22``, ``patients: 8``, one ``labels.<finding>`` line per
finding, the digest and the four label columns as double; MLflow's UI does not print the source of a custom source
type. The version page showed the model card (with the digests in its Data table) and a tags table with only
``medres.promotion.decision refused``, ``medres.promotion.failed_gates min_macro_auroc`` and
``medres.promotion.run_id`` (the tiny fit ranks below chance, so the decision is a refusal). ``data.root`` (the
archive's path) is still on the run page, in the Parameters table: params are the flattened config.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# aiohttp is a dependency of MLflow itself: a DevTools client without adding Playwright and its browser downloads.
import aiohttp
from mlflow import MlflowClient

from medres.lifecycle.promotion import EXIT_REFUSED
from medres.synthetic import synth_chest_xray

REPO = Path(__file__).resolve().parents[1]
MODEL = "chest_xray"
TINY = [
    "--data.preprocessing.spatial_size", "[32, 32]",
    "--trainer.max_epochs", "2",
    "--model.scheduler.init_args.T_max", "2",
    "--data.batch_size", "8",
    "--data.num_workers", "0",
    "--review.bootstrap_resamples", "200",
]  # fmt: skip
OLD_DATA_TAG = re.compile(r"data\.(?:train|val|test)\.\w+\.(?:positive|negative|unknown|uncertain)|data\.samples\.")
OLD_VERSION_TAG = re.compile(r"medres\.promotion\.(?:auroc|reasons|gates\b|data\.|time|alias)|medres\.threshold")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail if ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group it leads, SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def medres(args: list[str], cwd: Path, uri: str, ok: tuple[int, ...] = (0,)) -> str:
    """Run the medres CLI; its output, or an error with its tail when its exit status is not in ``ok``."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    result = subprocess.run(
        [sys.executable, "-m", "medres.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500
    )
    if result.returncode not in ok:
        raise RuntimeError(f"medres {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout + result.stderr


def fit(archive: Path, work: Path, uri: str) -> None:
    """The tiny CPU fit: logs one run and registers version 1 of ``chest_xray``."""
    configs = [REPO / "configs/chest_xray.yaml", REPO / "configs/profiles/cpu_demo.yaml"]
    medres(["fit", *(a for c in configs for a in ("--config", str(c))), "--data.root", str(archive), *TINY], work, uri)


class Page:
    """One Chromium tab over the DevTools protocol: navigate, wait for text, click, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:  # skip events until our reply
            message = await self.ws.receive_json(timeout=60)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return reply.get("result", {}).get("value")

    async def text(self) -> str:
        return str(await self.evaluate("document.body ? document.body.innerText : ''"))

    async def wait_for(self, pattern: str, timeout: float = 90.0) -> str:
        """The page's visible text once it matches ``pattern`` and has stopped changing (the UI loads in steps).

        After ``timeout`` the text as it is (the checks then say what is missing).
        """
        deadline, last, stable = time.monotonic() + timeout, "", 0
        while time.monotonic() < deadline:
            text = await self.text()
            stable = stable + 1 if text == last else 0
            if re.search(pattern, text) and stable >= 3:
                return text
            last = text
            await asyncio.sleep(0.5)
        print(f"the page never showed {pattern!r} within {timeout:.0f} s", file=sys.stderr)
        return last

    async def open(self, url: str, pattern: str) -> str:
        await self.call("Page.navigate", url=url)
        return await self.wait_for(pattern)

    async def click(self, pattern: str) -> bool:
        """Move the mouse onto and click the first element without child elements whose text matches ``pattern``.

        Real mouse events (not ``element.click()``): the UI opens some popovers on hover, some on click.
        """
        if not await self._on_leaf(pattern, "hit.scrollIntoView({block: 'center'})"):
            return False
        box = await self.evaluate(
            f"""(() => {{
            const re = new RegExp({json.dumps(pattern)});
            const hit = [...document.querySelectorAll('body *')]
                .find(e => e.childElementCount === 0 && re.test(e.textContent.trim()));
            const r = hit.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }})()"""
        )
        x, y = float(box[0]), float(box[1])
        await self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        await asyncio.sleep(0.5)
        for kind in ("mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        return True

    async def scroll_to(self, pattern: str) -> bool:
        """Scroll the first element without child elements whose text matches ``pattern`` to mid-screen."""
        return await self._on_leaf(pattern, "hit.scrollIntoView({block: 'center'})")

    async def _on_leaf(self, pattern: str, action: str) -> bool:
        script = f"""(() => {{
            const re = new RegExp({json.dumps(pattern)});
            const hit = [...document.querySelectorAll('body *')]
                .find(e => e.childElementCount === 0 && re.test(e.textContent.trim()));
            if (!hit) return false;
            {action};
            return true;
        }})()"""
        return bool(await self.evaluate(script))

    async def screenshot(self, path: Path) -> None:
        await asyncio.sleep(1.0)  # drawers and popovers slide in
        # The viewport only: capturing beyond it resizes the page, and the UI closes its popovers and drawers.
        reply = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.write_bytes(base64.b64decode(reply["data"]))


async def capture(chromium: str, pages: dict[str, str], out: Path, profile_dir: Path) -> dict[str, str]:
    """Screenshots and texts of the run page, its train dataset drawer and the version page."""
    port = free_port()
    browser = subprocess.Popen(
        [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile_dir}", f"--remote-debugging-port={port}", "--window-size=1500,1600",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    texts: dict[str, str] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/json/version", 60, browser)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                tab = next(t for t in await response.json() if t["type"] == "page")
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call(
                    "Emulation.setDeviceMetricsOverride", width=1500, height=1600, deviceScaleFactor=1, mobile=False
                )
                # MLflow 3.17's "About this run" panel lists the first dataset and "+N" for the others.
                run_ready = r"Datasets\s+train \([0-9a-f]{16}\)"
                texts["run"] = await page.open(pages["run"], run_ready)
                await page.screenshot(out / "run_overview.png")
                if await page.click(r"^\+\d+$"):
                    texts["run_datasets"] = await page.wait_for(r"val \([0-9a-f]{16}\)[\s\S]*test \([0-9a-f]{16}\)")
                    await page.screenshot(out / "run_datasets_more.png")
                await page.open(pages["run"], run_ready)
                if await page.click(r"^train \([0-9a-f]{16}\)$"):
                    texts["dataset"] = await page.wait_for(r"Digest: [0-9a-f]{16}")
                    await page.screenshot(out / "run_dataset_train.png")
                texts["version"] = await page.open(pages["version"], r"medres\.promotion\.decision")
                await page.screenshot(out / "model_version.png")
                if await page.scroll_to(r"^medres\.promotion\.decision$"):  # the tags table, below the model card
                    await asyncio.sleep(1.0)
                    await page.screenshot(out / "model_version_tags.png")
    finally:
        stop(browser)
    for name, text in texts.items():
        (out / f"{name}.txt").write_text(text)
    return texts


def check(
    texts: dict[str, str], digests: dict[str, str], run_tags: dict[str, str], version_tags: dict[str, str], secret: str
) -> list[str]:
    """What the pages must and must not show; the failures.

    Args:
        texts: Visible text per page.
        digests: The run's dataset digests by name, as the API returns them.
        run_tags: The run's tags, as the API returns them.
        version_tags: The version's tags, as the API returns them.
        secret: The archive's path, which must not be in the Datasets section, its list or the drawer. (It is on
            the run page all the same: ``data.root`` is a param, since params are the flattened config.)
    """
    failures = []
    run = texts.get("run", "")
    about = run[run.find("About this run") :]
    shown = about + "\n" + texts.get("run_datasets", "")
    for split, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        if split not in digests:
            failures.append(f"API: the run has no {split} dataset")
        elif not re.search(rf"{split} \({digests[split]}\)\s+{context}", shown, re.IGNORECASE):
            failures.append(f"run page: dataset {split} ({digests.get(split)}) with context {context} not shown")
    if re.search(r"Datasets\s*\n\s*(?:None|—)", about):
        failures.append("run page: Datasets reads None")
    if OLD_DATA_TAG.search(run) or any(OLD_DATA_TAG.match(k) for k in run_tags):
        failures.append("run page: data.<split>.<finding>.<state> tags are back")
    dataset = texts.get("dataset", "")
    if not dataset:
        failures.append("run page: the train dataset's drawer did not open")
    elif not re.search(r"samples: \d+\s+patients: \d+\s+labels\.\w+: \{", dataset):
        failures.append("dataset drawer: no counts profile shown")
    version = texts.get("version", "")
    for key, value in version_tags.items():
        if not re.search(rf"{re.escape(key)}\s+{re.escape(value)}", version):
            failures.append(f"version page: tag {key} = {value} not shown")
    if "medres.promotion.decision" not in version_tags:
        failures.append("version: no medres.promotion.decision tag")
    if OLD_VERSION_TAG.search(version) or any(OLD_VERSION_TAG.match(k) for k in version_tags):
        failures.append("version page: old promotion evidence or threshold tags are shown")
    datasets_part = about[: about.find("Tags")] + dataset[dataset.find("Data details for") :]
    if secret in datasets_part:
        failures.append("the Datasets section or drawer shows the archive's path")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("run_page"), help="folder for the PNGs and page texts")
    parser.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the archive and store here; a second run reuses its fit"
    )
    args = parser.parse_args()
    chromium = args.chromium or next(
        (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if chromium is None:
        print("no chromium on PATH (Debian: apt-get install chromium); pass --chromium", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="medres-run-page-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        archive = work / "archive"
        fitted = (work / "fitted").is_file()  # a finished fit and decision from an earlier run with this --work
        if not fitted:
            # What an interrupted earlier run with this --work left: start from an empty store.
            for folder in (archive, work / "artifacts"):
                shutil.rmtree(folder, ignore_errors=True)
            (work / "mlflow.db").unlink(missing_ok=True)
            synth_chest_xray(archive, patients=12, seed=0, image_size=64)
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
        with (work / "server.log").open("w") as log:
            server = subprocess.Popen(
                [
                    sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}",
                    "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1",
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            wait_http(f"{uri}/health", 120, server)
            started = time.monotonic()
            if not fitted:
                fit(archive, work, uri)
                print(f"fit: {time.monotonic() - started:.0f} s")
                # Promoted or refused (exit 3: the tiny fit may rank below chance), the decision leaves its tags.
                promote = ["promote", "--model", MODEL, "--version", "1", "--data.root", str(archive)]
                decision = medres(promote, work, uri, ok=(0, EXIT_REFUSED))
                print(next((line for line in decision.splitlines() if "@champion" in line), decision[-300:]))
                (work / "fitted").touch()
            client = MlflowClient(uri, registry_uri=uri)
            experiment = client.get_experiment_by_name("chest_xray")
            assert experiment is not None
            (run,) = client.search_runs([experiment.experiment_id])
            version = client.get_model_version(MODEL, "1")
            pages = {
                "run": f"{uri}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}",
                "version": f"{uri}/#/models/{MODEL}/versions/1",
            }
            texts = asyncio.run(capture(chromium, pages, out, work / "chromium-profile"))
        finally:
            stop(server)
    print(f"\nrun tags ({len(run.data.tags)}): {sorted(run.data.tags)}")
    print(f"run datasets: {[(i.dataset.name, i.dataset.digest) for i in client_inputs(run)]}")
    print(f"version tags: {json.dumps(version.tags, sort_keys=True)}")
    for name, text in texts.items():
        # The UI's navigation comes first on every page: print from the part the page is about.
        start = max(0, min((i for i in (text.find("About this run"), text.find("Registered At")) if i >= 0), default=0))
        print(f"\n---- {name} page text (1500 characters) ----\n{text[start : start + 1500]}")
    print(f"\nscreenshots: {sorted(str(p) for p in out.glob('*.png'))}")
    digests = {i.dataset.name: i.dataset.digest for i in client_inputs(run)}
    failures = check(texts, digests, run.data.tags, version.tags, str(archive))
    for failure in failures:
        print(f"FAIL {failure}")
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def client_inputs(run: Any) -> list[Any]:
    """The run's dataset inputs (``search_runs`` results carry them)."""
    return list(run.inputs.dataset_inputs) if run.inputs is not None else []


if __name__ == "__main__":
    sys.exit(main())
