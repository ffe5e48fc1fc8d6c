"""The workbench's notebook API: the same operations as the CLI, returning DataFrames.

    import workbench as wb
    wb.collect(model="tiny", corpus="wiki-sample", hook_point="blocks.1.hook_resid_post", tokens=1000)
    wb.runs()
    wb.sql("SELECT * FROM activation_stats")
    wb.dictionary(dict_id).feature(3)      # examples DataFrame; .histogram(3) a plotly figure
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: `import saes` pulls in workbench.metrics, not the model stack
    import pandas as pd

    from workbench.store import Store

__all__ = ["DictionaryView", "collect", "dictionary", "load_model", "runs", "sql"]


def load_model(name: str, device: str = "cpu") -> Any:
    """See `workbench.models.load_model`."""
    from workbench.models import load_model as load

    return load(name, device)


def _store(store: str | Path | Store | None) -> Store:
    from workbench.store import Store

    return store if isinstance(store, Store) else Store(store)


def collect(store: str | Path | Store | None = None, **fields) -> pd.DataFrame:
    """Run `workbench collect` with config fields as keyword arguments; return the run's statistics."""
    from workbench.jobs import run_job

    s = _store(store)
    run_id = run_job("collect", s, **fields)
    return s.query("SELECT * FROM activation_stats WHERE run_id = ?", [run_id])


def runs(store: str | Path | Store | None = None) -> pd.DataFrame:
    return _store(store).query("SELECT * FROM runs ORDER BY started_at")


def sql(query: str, params: list | None = None, store: str | Path | Store | None = None) -> pd.DataFrame:
    """A read-only query against the store (see Store.user_query: one read statement, sandboxed)."""
    return _store(store).user_query(query, params)


class DictionaryView:
    """A stored dictionary's feature pages, for notebooks: `wb.dictionary(id).feature(3)`."""

    def __init__(self, dict_id: str, store: str | Path | Store | None = None):
        from workbench import queries

        self.store = _store(store)
        self.row = queries.dictionary_row(self.store, dict_id)
        self.dict_id = dict_id

    @property
    def metrics(self) -> dict:
        return self.row["metrics"]

    def feature(self, feature: int) -> pd.DataFrame:
        """Top and quantile examples: kind, rank, act, tokens, per-token acts."""
        from workbench import queries

        return queries.feature_examples(self.store, self.dict_id, feature)

    def histogram(self, feature: int):
        """Plotly bar chart of the feature's activation histogram (non-zero activations)."""
        import plotly.graph_objects as go

        from workbench import queries

        stats = queries.feature_stats(self.store, self.dict_id, feature)
        if stats is None:
            raise LookupError(f"feature {feature} of {self.dict_id} has no statistics "
                              "(never fired, or no feature pass)")
        edges = list(stats["hist_edges"])
        centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
        fig = go.Figure(go.Bar(x=centers, y=list(stats["hist_counts"]), width=edges[1] - edges[0]))
        fig.update_layout(title=f"{self.dict_id} feature {feature}: freq {stats['freq']:.2e}",
                          xaxis_title="activation", yaxis_title="tokens")
        return fig


def dictionary(dict_id: str, store: str | Path | Store | None = None) -> DictionaryView:
    return DictionaryView(dict_id, store)
