"""The app on what the real pipelines write: train a tiny TopK SAE, run the feature pass, browse it."""

from __future__ import annotations

from pathlib import Path

from app.server import build_app
from pipelines.features import FeaturesConfig
from pipelines.features import run as features_run
from pipelines.train import TrainDictionaryConfig
from pipelines.train import run as train_run
from tests.app.app_helpers import free_port
from workbench.store import Store

TRAIN = dict(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", context=64, tokens=6_000,
             batch_tokens=512, buffer_tokens=2048, eval_tokens=1000, ce_sequences=2, sae={"k": 8}, expansion=4)
CELLS = "div[role=gridcell]"


def test_browse_a_dictionary_the_pipelines_built(page, data_dir: Path) -> None:
    store = Store(data_dir / "workbench.duckdb")
    dict_id = train_run(TrainDictionaryConfig(**TRAIN), store, progress=False)
    features_run(FeaturesConfig(dict_id=dict_id, tokens=2000, context=64, n_top=5, per_quantile=2), store,
                 progress=False)
    densest = int(store.query("SELECT feature FROM feature_stats ORDER BY freq DESC LIMIT 1")["feature"][0])
    demo = build_app(store, "tiny")
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        url = demo.local_url.rstrip("/")
        page.goto(f"{url}/?dict={dict_id}&feature={densest}")
        page.wait_for_selector("#fb-header h2")
        assert page.locator("#fb-header h2").inner_text().startswith(f"Feature {densest} ")
        assert 5 <= page.locator("#fb-examples .wb-example").count() <= 5 + 10 * 2
        assert page.locator("#fb-examples .wb-peak").count() == page.locator("#fb-examples .wb-example").count()
        page.wait_for_selector("#fb-hist .wb-hist-title")
        page.get_by_role("tab", name="Prompt inspector").click()
        page.fill("#pi-text textarea", "The history of the city")
        page.click("#pi-run")
        page.wait_for_selector(f"#pi-features {CELLS}")
    finally:
        demo.close()
