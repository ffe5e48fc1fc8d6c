"""ITDA through the pipelines on the tiny model: `workbench train --architecture itda` builds and
registers it, the feature pass writes each atom's origin, examples check out, and the feature page
shows the training token an atom was taken from next to its top activations."""

from __future__ import annotations

from app.views import features
from app.views.common import AppContext
from pipelines.features import token_names
from workbench import cli, queries
from workbench.models import load_model
from workbench.registered import load_registered
from workbench.sources import ActivationSource, token_sequences
from workbench.store import Store

TRAIN = ["train", "--architecture", "itda", "--model", "tiny", "--corpus", "wiki-sample", "--context", "64",
         "--hook-point", "blocks.1.hook_resid_post", "--tokens", "6000", "--expansion", "2", "--sae.l0", "4",
         "--sae.batch-rows", "256", "--sae.mix-rows", "1024", "--eval-tokens", "1000", "--ce-sequences", "4"]


def test_itda_is_trained_paged_and_shows_where_each_atom_came_from(data_dir):
    store = Store(data_dir / "w.duckdb")
    at = ["--store", str(store.path)]
    assert cli.main([*at, *TRAIN]) == 0
    dict_id = store.query("SELECT dict_id FROM dictionaries")["dict_id"].item()
    row = queries.dictionary_row(store, dict_id)
    assert row["method"] == "itda" and 0 < row["metrics"]["fvu"] < 1 and row["metrics"]["l0"] <= 4
    assert cli.main([*at, "features", "--dict-id", dict_id, "--tokens", "3000", "--context", "64"]) == 0
    assert cli.main([*at, "check-examples", "--dict-id", dict_id]) == 0

    itda = load_registered(store, dict_id).dictionary
    origins = store.query("SELECT feature, seq, pos, window_start, window_tokens FROM atom_origins "
                          "WHERE dict_id = ? ORDER BY feature", [dict_id])
    assert len(origins) == itda.d_dict
    tiny = load_model("tiny")
    train = list(token_sequences(tiny, ActivationSource(model="tiny", corpus="wiki-sample", context=64), "train")())
    names = token_names(tiny.tokenizer)
    for feature in (0, itda.d_dict // 2, itda.d_dict - 1):
        seq, pos, token = itda.origins()[1][feature].tolist()
        stored = origins.iloc[feature]
        assert (stored.seq, stored.pos) == (seq, pos) and int(train[seq][pos]) == token
        marked = stored.window_tokens[pos - stored.window_start]
        assert marked == names[token]

    feature = int(store.query("SELECT feature FROM feature_stats WHERE dict_id = ? ORDER BY freq DESC LIMIT 1",
                              [dict_id])["feature"].item())
    message, _, _, examples = features.render(AppContext(store, live=None, semantic=None), dict_id, feature)  # type: ignore[arg-type]
    assert message == "" and 'id="wb-origin"' in examples and examples.index("Taken from") < examples.index("Top")
