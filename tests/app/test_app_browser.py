"""End-to-end: the running app driven in headless Chromium (see conftest.py for the fixtures)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from app.html import NOT_COUNTED
from app.server import build_app
from tests.app.app_helpers import REPO, free_port
from tests.app.store_builder import (
    CIRCUIT_RUN,
    EXPLANATIONS,
    GEO_RUN,
    HOSTILE_FEATURE,
    IMG,
    OLD_EXPLANATION,
    PROBE_RUN,
    SCRIPT,
    SIMILARITY_RUN,
    SINK_FEATURE,
    SMOLLM_TOKENS,
    STEERING_RUN,
    UNLEARN_RUN,
    BuiltStore,
)
from workbench.store import Store

CELLS = "div[role=gridcell]"


def open_features(page, server: str, query: str = "") -> None:
    page.goto(f"{server}/?dict=tiny-topk{query}")
    page.get_by_role("tab", name="Features").click()
    page.wait_for_selector(f"#fb-results {CELLS}")


def wait_page(page, feature: int) -> None:
    page.wait_for_function(
        "f => (document.querySelector('#fb-header h2')?.textContent || '').startsWith('Feature ' + f + ' ')",
        arg=feature)


def test_dictionaries_tab(page, server: str) -> None:
    page.goto(server)
    page.wait_for_selector("#dict-table td")
    cells = page.locator("#dict-table td").all_inner_texts()
    assert "tiny-topk" in cells and "tiny-relu" in cells and "blocks.0.hook_resid_post" in cells
    assert "5%" in cells and "93%" in cells and "23.5" in cells   # dead fraction, CE loss recovered, L0
    headers = page.locator("#dict-table th")
    assert headers.all_inner_texts() == ["dictionary", "method", "recipe", "model", "hook", "d_in", "latents", "FVU",
                                         "L0", "dead", "CE rec.", "KL"]
    tips = dict(zip(headers.all_inner_texts(), headers.evaluate_all("hs => hs.map(h => h.title)")))
    assert tips["FVU"].startswith("fraction of variance unexplained") and tips["CE rec."].startswith("CE loss")
    lines = headers.evaluate_all("hs => hs.map(h => { const r = document.createRange(); r.selectNodeContents(h); "
                                 "return r.getClientRects().length; })")
    assert lines == [1] * len(lines)   # every header on one line, none broken letter by letter
    for chart, title in (("#fvu-l0", "FVU vs L0"), ("#ce-l0", "CE loss recovered vs L0")):
        page.wait_for_selector(f"{chart} .scatterlayer .point")
        assert page.locator(f"{chart} .gtitle").text_content() == title
        assert page.locator(f"{chart} .scatterlayer .point").count() == 2     # one marker per dictionary
        assert page.locator(f"{chart} .legendtext").all_text_contents() == ["relu", "topk"]   # coloured by method
    page.wait_for_selector("#eval-table td")
    evals = page.locator("#eval-table td").all_inner_texts()
    assert "37.5%" in evals and "12.5%" in evals and "81%" in evals   # absorption and probing as percentages
    assert "dense" not in page.locator("#eval-table th").all_inner_texts()   # no column without values
    first_column = "#eval-table tbody tr td:first-child"
    page.locator("#eval-table th", has_text="FVU").click()                  # sorts by FVU, ascending
    assert page.locator(first_column).all_inner_texts() == ["tiny-relu", "tiny-topk"]
    page.locator("#eval-table th", has_text="FVU").click()
    assert page.locator(first_column).all_inner_texts() == ["tiny-topk", "tiny-relu"]
    page.wait_for_selector("#probing-k .gtitle")
    assert page.locator("#probing-k .gtitle").text_content() == "Sparse probing accuracy vs k"
    assert page.locator("#probing-k .scatterlayer .trace").count() == 2   # one line per dictionary
    assert page.locator("#probing-k .legend .traces").count() == 3        # and the raw baseline, off by default


def test_layer_similarity_heatmap(page, server: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 1600})   # the choices list opens below the fold: in view,
    page.goto(server)                                         # or a click on it can find it outside the viewport
    page.get_by_text("Layer similarity between two models").click()
    page.locator("#sim-run input").fill(SIMILARITY_RUN)   # typed: the list opens below the fold
    page.get_by_role("option", name=SIMILARITY_RUN).click()   # once the page's load has filled the choices
    page.wait_for_selector("#sim-heatmap .gtitle")
    assert page.locator("#sim-heatmap .gtitle").text_content() == "jaccard by layer"
    assert "accuracy (jaccard): 1.000 of 3 layers" in page.locator("#sim-accuracy").inner_text()
    page.get_by_label("cka").check()
    page.wait_for_function("() => document.querySelector('#sim-heatmap .gtitle')?.textContent === 'cka by layer'")
    assert "accuracy (cka): 0.667" in page.locator("#sim-accuracy").inner_text()


def test_search_and_open_feature_page(page, server: str) -> None:
    open_features(page, server)
    page.fill("#fb-query textarea, #fb-query input", "river")
    page.click("#fb-search")
    page.wait_for_function("() => [...document.querySelectorAll('#fb-results div[role=gridcell]')]"
                           ".some(c => c.textContent.includes('names of rivers'))")
    page.locator(f"#fb-results {CELLS}").first.click()
    wait_page(page, 5)
    assert "names of rivers and flowing water" in page.locator("#fb-header").inner_text()
    assert "density" in page.locator("#fb-header").inner_text()
    peak = page.locator("#fb-examples .wb-tokens span.wb-peak").first
    assert float(peak.get_attribute("title")) > 0
    assert "rgba(255,140,0,1.00)" in peak.get_attribute("style")  # the top example's peak is the max
    assert page.locator("#fb-examples .wb-example").count() == 15  # 5 top + 10 quantile bins
    page.wait_for_selector("#fb-hist .wb-hist-title")
    assert page.locator("#fb-hist .wb-hist-title").text_content() == "Activation histogram · feature 5"
    assert page.locator("#fb-hist rect").count() > 0


def test_feature_page_header_and_examples_read_as_text(page, server: str) -> None:
    """One explanation (the latest) with its scores beside their controls on one line; examples are the
    text their tokens decode to, shaded on a scale `<|im_start|>`'s 3,900 does not set."""
    open_features(page, server, f"&feature={SINK_FEATURE}")
    wait_page(page, SINK_FEATURE)
    header = page.locator("#fb-header")
    assert header.locator(".wb-explanation").all_inner_texts() == [EXPLANATIONS[SINK_FEATURE]]
    assert OLD_EXPLANATION not in header.inner_text()
    line = header.locator(".wb-stats")
    assert [s.strip() for s in line.locator("span").all_inner_texts()][:2] == [
        "detection 0.82 · shuffled 0.51", "fuzzing 0.77 · shuffled 0.49"]
    assert "density" in line.inner_text() and "max act" in line.inner_text()
    rows = line.evaluate("e => { const r = document.createRange(); r.selectNodeContents(e); "
                         "return new Set([...r.getClientRects()].map(b => Math.round(b.top))).size; }")
    assert rows == 1   # scores, density and max activation on one line
    example = page.locator("#fb-examples .wb-tokens").first
    assert example.text_content() == "".join(SMOLLM_TOKENS).replace("\n", "↵")   # no inserted spaces
    assert example.inner_text() == "<|im_start|>The neutrino cost $527.61m in 2019.↵New"
    sink, peak = example.locator("span.wb-excluded"), example.locator("span.wb-peak")
    assert sink.text_content() == "<|im_start|>" and sink.get_attribute("style") is None
    assert sink.get_attribute("title") == NOT_COUNTED
    assert peak.text_content() == " neutr" and "rgba(255,140,0,1.00)" in peak.get_attribute("style")
    assert float(peak.get_attribute("title")) > 0                          # hover shows the activation
    edges = example.locator("span").evaluate_all("s => s.map(e => [e.getBoundingClientRect().left, "
                                                 "e.getBoundingClientRect().right])")
    assert abs(edges[1][1] - edges[2][0]) < 0.5   # " neutr" and "ino" shaded side by side, no gap between


def test_unexplained_feature_says_so_in_words(page, server: str) -> None:
    open_features(page, server, "&feature=0")
    wait_page(page, 0)
    text = page.locator("#fb-header").inner_text()
    assert "No explanation yet." in text and "not scored" in text and "density" in text
    assert not any(word in text for word in ("None", "nan", "NaN", "<NA>"))


def test_hostile_document_renders_as_text(page, server: str) -> None:
    open_features(page, server, f"&feature={HOSTILE_FEATURE}")
    wait_page(page, HOSTILE_FEATURE)
    page.wait_for_timeout(500)  # give an injected onerror handler time to fire, were there one
    text = page.locator("#fb-examples").inner_text()
    assert SCRIPT in text and IMG in text
    origin = page.locator("#wb-origin")   # the atom's training window (ITDA), its token marked
    assert SCRIPT in origin.inner_text() and origin.locator("span.wb-peak").inner_text() == " " + SCRIPT
    assert "<img src=x onerror=alert(2)>" in page.locator("#fb-header").inner_text()
    assert "<b>bold</b>" in page.locator("#fb-header").inner_text()  # a token from the logit table
    page.fill("#fb-query textarea, #fb-query input", "script tags")
    page.click("#fb-search")
    page.wait_for_function("() => [...document.querySelectorAll('#fb-results div[role=gridcell]')]"
                           ".some(c => c.textContent.includes('onerror=alert(2)'))")  # the table shows it as text
    assert page.locator("img[src=x]").count() == 0 and page.locator("#fb-examples script").count() == 0
    assert page.dialogs == []


def test_prompt_inspector_opens_feature(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Prompt inspector").click()
    page.wait_for_function("() => document.querySelector('#pi-dict input')?.value")
    page.fill("#pi-text textarea", "the river flows past the old mill")
    page.click("#pi-run")
    page.wait_for_selector(f"#pi-features {CELLS}")
    assert page.locator("#pi-tokens .wb-tokens span").count() >= 7
    row = page.locator(f"#pi-features {CELLS}").all_inner_texts()[:6]  # pos, token, rank, feature, act, explanation
    page.locator(f"#pi-features {CELLS}").nth(3).click()
    wait_page(page, int(row[3]))
    assert page.get_by_role("tab", name="Features").get_attribute("aria-selected") == "true"


def inspect_prompt(page, server: str, text: str, colour_by: int | None = None) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Prompt inspector").click()
    page.wait_for_function("() => document.querySelector('#pi-dict input')?.value")
    if colour_by is not None:
        page.fill("#pi-colour-by input", str(colour_by))
    page.fill("#pi-text textarea", text)
    page.click("#pi-run")
    page.wait_for_selector(f"#pi-features {CELLS}")


def table_rows(page, selector: str, width: int) -> list[list[str]]:
    cells = page.locator(f"{selector} {CELLS}").all_inner_texts()
    return [cells[i:i + width] for i in range(0, len(cells), width)]


def test_clicking_a_token_lists_its_features_with_explanations(page, server: str) -> None:
    inspect_prompt(page, server, "the river flows past the old mill")
    positions = {row[0] for row in table_rows(page, "#pi-features", 6)}
    assert len(positions) >= 5                                  # every token's features at first
    page.locator("#pi-tokens span[data-pos='2']").click()
    page.wait_for_function("() => document.querySelector('#pi-focus')?.textContent.includes('position 2')")
    page.wait_for_function(f"() => [...document.querySelectorAll('#pi-features {CELLS}')].length <= 6 * 8")
    rows = table_rows(page, "#pi-features", 6)
    assert rows and {row[0] for row in rows} == {"2"}           # the clicked token's own features only
    explained = {str(f): text for f, text in EXPLANATIONS.items()}
    assert all(row[5] == explained.get(row[3], "") for row in rows)   # each with its newest explanation
    page.locator(f"#pi-features {CELLS}").nth(3).click()        # and a row still opens its page
    wait_page(page, int(rows[0][3]))


def test_the_strip_can_be_shaded_by_one_feature(page, server: str) -> None:
    inspect_prompt(page, server, "the river flows past the old mill")
    feature = int(table_rows(page, "#pi-features", 6)[-1][3])   # a feature active somewhere in the text
    inspect_prompt(page, server, "the river flows past the old mill", colour_by=feature)
    page.wait_for_function("f => document.querySelector('#pi-tokens span[data-pos=\"1\"]')?.title"
                           ".startsWith('feature ' + f + ':')", arg=feature)
    titles = page.locator("#pi-tokens span[data-pos]").evaluate_all("spans => spans.map(s => s.title)")
    values = [float(t.split(": ")[1]) for t in titles if t.startswith("feature ")]   # special tokens are not counted
    assert max(values) > 0 and page.locator("#pi-tokens span[style*='rgba']").count() == sum(v > 0 for v in values)


# Every length the page writes into the steered box. Wrapping the value setter sees each update the
# page makes, where polling on a timer misses updates that arrive together on a loaded machine.
RECORD_STEERED_LENGTHS = """() => {
    window.lengths = new Set();
    const proto = HTMLTextAreaElement.prototype, value = Object.getOwnPropertyDescriptor(proto, 'value');
    Object.defineProperty(proto, 'value', {configurable: true, get() { return value.get.call(this); },
        set(v) { if (this.closest('#st-steered')) window.lengths.add(String(v).length); value.set.call(this, v); }});
}"""


def test_steered_generation_side_by_side(page, server: str) -> None:
    open_features(page, server, f"&feature={HOSTILE_FEATURE}")
    wait_page(page, HOSTILE_FEATURE)
    page.click("#fb-steer")  # opens the playground with this feature filled in
    page.wait_for_function("f => document.querySelector('#st-features textarea, #st-features input')?.value"
                           " === f + ':8'", arg=HOSTILE_FEATURE)
    assert page.get_by_role("tab", name="Steering").get_attribute("aria-selected") == "true"
    assert page.locator("#st-dict input").input_value() == "tiny-topk"
    page.fill("#st-features textarea, #st-features input", "3:40, 7:-10")
    page.fill("#st-prompt textarea", "the river flows past")
    page.get_by_label("Chat template").uncheck()
    page.evaluate(RECORD_STEERED_LENGTHS)
    page.click("#st-run")
    page.wait_for_function("() => document.querySelector('#st-steered textarea').value.length > 0")
    page.wait_for_function("() => !document.querySelector('#st-run').disabled && "
                           "!document.querySelector('#st-steered .pending, #st-steered .generating')")
    page.wait_for_timeout(300)
    baseline = page.locator("#st-baseline textarea").input_value()
    steered = page.locator("#st-steered textarea").input_value()
    assert baseline and steered and baseline != steered
    assert page.evaluate("() => window.lengths.size") >= 4     # streamed: it grew in steps before it was whole


def test_a_feature_is_picked_by_searching_its_explanation(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Steering").click()
    page.wait_for_function("() => document.querySelector('#st-dict input')?.value")
    page.locator("#st-dict input").click()
    page.get_by_role("option", name="tiny-topk", exact=True).click()   # the dictionary with explanations
    page.locator("#st-pick input").fill("rivers")
    page.get_by_role("option", name=f"5 · {EXPLANATIONS[5]}").click()
    page.click("#st-add")
    page.wait_for_function("() => document.querySelector('#st-features textarea, #st-features input')?.value"
                           " === '5:8'")
    page.locator("#st-strength input[type=number]").fill("-12.5")
    page.locator("#st-strength input[type=number]").press("Enter")
    page.locator("#st-pick input").fill("bakeries")
    page.get_by_role("option", name=f"7 · {EXPLANATIONS[7]}").click()
    page.click("#st-add")
    page.wait_for_function("() => document.querySelector('#st-features textarea, #st-features input')?.value"
                           " === '5:8, 7:-12.5'")


def test_stored_markup_steering_side_by_side(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Steering").click()
    page.get_by_text("Stored markup-steering runs").click()
    page.locator("#st-stored-run input").click()
    page.get_by_role("option", name=STEERING_RUN).click()
    page.wait_for_selector(f"#st-stored {CELLS}")
    page.wait_for_timeout(500)  # give an injected onerror handler time to fire, were there one
    headers = page.locator("#st-stored th").all_inner_texts()
    assert [h for h in headers if h.startswith("alpha")] == ["alpha=0", "alpha=50"]
    cells = page.locator(f"#st-stored {CELLS}").all_inner_texts()
    assert "To the sea." in cells and "sea sea sea sea" in cells and IMG in cells   # the answer shows as text


def test_unlearning_tab_shows_features_scores_and_generations_side_by_side(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Unlearning").click()
    page.wait_for_selector(f"#ul-features {CELLS}")           # the only run and its only concept open at once
    assert page.locator("#ul-run input").input_value() == UNLEARN_RUN
    features = page.locator(f"#ul-features {CELLS}").all_inner_texts()
    assert features[:3] == ["0", "7", "1.5"]                  # rank, feature, score
    scores = page.locator(f"#ul-scores {CELLS}").all_inner_texts()
    assert scores[0] == "sauce" and "0.28" in scores          # SAUCE first; selectivity 0.30 - 0.02
    generations = page.locator(f"#ul-generations {CELLS}").all_inner_texts()
    assert generations == ["concept", "The striker scored", "a goal in the final minute.", "The weather was mild."]
    page.get_by_label("diff-means").check()
    page.wait_for_function(f"() => [...document.querySelectorAll('#ul-generations {CELLS}')]"
                           ".some(c => c.textContent.includes('<img'))")
    page.wait_for_timeout(500)  # give an injected onerror handler time to fire, were there one
    assert IMG in page.locator(f"#ul-generations {CELLS}").all_inner_texts()   # the text shows as text
    page.locator(f"#ul-features {CELLS}").nth(1).click()       # feature 7's row opens its page
    wait_page(page, 7)
    assert page.get_by_role("tab", name="Features").get_attribute("aria-selected") == "true"


def test_circuits_tab_shows_aucs_head_heatmap_and_edges(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Circuits").click()
    page.wait_for_selector(f"#ci-results {CELLS}")             # the only run and its only task open at once
    assert page.locator("#ci-run input").input_value() == CIRCUIT_RUN
    results = page.locator(f"#ci-results {CELLS}").all_inner_texts()
    assert results[:6] == ["discrete", "10", "2", "0.875", "0.177", "2"]   # mean and spread of two seeds
    page.wait_for_timeout(500)  # give an injected onerror handler time to fire, were there one
    assert IMG in page.locator(f"#ci-tasks {CELLS}").all_inner_texts()   # prompt text shows as text
    page.wait_for_selector("#ci-heatmap .gtitle")
    assert page.locator("#ci-heatmap .gtitle").text_content() == "discrete · ioi"
    assert page.locator("#ci-heatmap .scatterlayer .point").count() == 2    # the two circuit heads ringed
    assert page.locator("#ci-edges .gtitle").text_content() == "discrete-edge edges · ioi"
    assert page.locator("#ci-edges .scatterlayer .point").count() == 2     # one edge, two heads
    page.get_by_label("mean-ablation").check()
    page.wait_for_function("() => document.querySelector('#ci-heatmap .gtitle')?.textContent "
                           "=== 'mean-ablation · ioi'")


def test_geography_tab_counts_autocorrelated_units_and_maps_one(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Geography").click()
    page.wait_for_selector(f"#geo-summary {CELLS}")
    assert page.locator("#geo-run input").input_value() == GEO_RUN
    rows = page.locator(f"#geo-summary {CELLS}").all_inner_texts()
    assert rows == ["1", "feature", "1", "1", "0.8", "0.6", "0.4", "1", "neuron", "2", "1", "0.45", "0.6", "0.4"]
    page.wait_for_selector("#geo-map .gtitle")
    assert page.locator("#geo-map .gtitle").text_content() == "1/feature/3 · activation"
    page.get_by_label("local clusters").check()
    page.wait_for_function("() => document.querySelector('#geo-map .gtitle')?.textContent "
                           "=== '1/feature/3 · local clusters'")
    legend = page.locator("#geo-map .legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert {"not significant", "HH", "LH"} <= set(legend)


def test_model_sparsity_tab_puts_probes_beside_the_layer_dictionaries(page, server: str) -> None:
    page.goto(server)
    page.get_by_role("tab", name="Model sparsity").click()
    page.wait_for_selector(f"#pr-routing {CELLS}")
    assert page.locator("#pr-run input").input_value() == PROBE_RUN
    assert page.locator("#pr-sparsity .gtitle").text_content() == "MLP neurons below threshold"
    assert page.locator("#pr-sparsity .scatterlayer .trace").count() == 4   # 2 thresholds x token / sequence
    assert page.locator(f"#pr-cost {CELLS}").all_inner_texts() == ["tiny", "0.2", "core", "3.5", "3", "100",
                                                                   "tiny", "0.2", "random", "6", "3", "100"]
    page.wait_for_selector(f"#pr-layer-dicts {CELLS}")
    assert page.locator("#pr-layer input").input_value() == "0"
    dicts = page.locator(f"#pr-layer-dicts {CELLS}").all_inner_texts()
    assert "tiny-topk" in dicts and "blocks.0.hook_resid_post" in dicts
    assert page.locator(f"#pr-layer-core {CELLS}").all_inner_texts()[:2] == ["0.2", "0.5"]
    assert page.locator("#pr-loads .gtitle").text_content() == "Expert loads (largest first)"
    page.locator("#pr-layer input").click()
    page.get_by_role("option", name="1", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#pr-layer-core div[role=gridcell]')[1]?.innerText"
                           ".trim() === '0.6'")
    assert page.locator(f"#pr-layer-dicts {CELLS}").count() == 0   # nothing trained at layer 1


def test_no_error_reaches_the_page_while_a_pipeline_publishes(page, server: str, built: BuiltStore) -> None:
    writer = subprocess.Popen([sys.executable, str(REPO / "tests/app/publisher.py"), str(built.store.path), "7"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        for i in range(4):
            open_features(page, server, f"&feature={i}")
            page.wait_for_selector("#fb-header h2, #fb-message .wb-notice")
            assert page.locator(".wb-error").count() == 0
            assert page.locator(".toast-body").count() == 0  # gradio's error toasts
            page.get_by_role("tab", name="Dictionaries").click()
            page.wait_for_selector("#dict-table td")
    finally:
        out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0 and int(out.split()[-1]) > 3  # the pipeline really was writing


def test_a_long_publish_shows_updating_then_the_page(page, built: BuiltStore, capfd) -> None:
    """A writer holding the store past the app's retry window: the page says "updating", then recovers.
    The writer holds the lock until the test has seen the notice (a fixed hold could end before a
    loaded machine has drawn the page)."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from workbench.store import Store
        with Store({str(built.store.path)!r}).writer():
            print("locked", flush=True)
            sys.stdin.readline()
        """)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    demo = build_app(Store(built.store.path, lock_timeout=0.5), "tiny")
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        assert holder.stdout.readline().strip() == "locked"
        page.goto(f"{demo.local_url.rstrip('/')}/?dict=tiny-topk&feature={HOSTILE_FEATURE}")
        page.get_by_role("tab", name="Features").click()
        page.wait_for_selector("#fb-message .wb-notice")
        assert "being updated" in page.locator("#fb-message").inner_text()
        assert page.locator(".wb-error").count() == 0 and page.locator(".toast-body").count() == 0
        assert "Traceback" not in capfd.readouterr().err   # every view's page-load callback met the lock
        holder.communicate("release\n", timeout=30)
        page.reload()
        wait_page(page, HOSTILE_FEATURE)
    finally:
        holder.kill()
        demo.close()


def test_a_method_tab_shows_once_the_store_holds_its_run(page, built: BuiltStore, tmp_path) -> None:
    """The app over a store with dictionaries only: no method tab; after a circuits run is stored, a
    reload shows the Circuits tab (and only it)."""
    store = Store(tmp_path / "w.duckdb")
    store.publish("dicts", {"dictionaries": built.store.query("SELECT * FROM dictionaries")})
    demo = build_app(store, "tiny")
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Steering").wait_for()
        page.wait_for_timeout(1000)   # the page-load callbacks have run
        shown = page.get_by_role("tab").all_inner_texts()
        assert shown == ["Dictionaries", "Features", "Prompt inspector", "Steering"]
        tables = ("circuit_tasks", "circuit_results", "circuit_heads", "circuit_edges")
        store.publish(CIRCUIT_RUN, {table: built.store.query(f"SELECT * FROM {table}") for table in tables})
        page.reload()
        page.get_by_role("tab", name="Circuits").wait_for()
        assert page.get_by_role("tab").all_inner_texts() == [*shown, "Circuits"]
    finally:
        demo.close()
