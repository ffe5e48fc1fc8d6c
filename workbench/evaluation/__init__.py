"""The evaluation suite's metrics (SAEBench's offline subset), each a function of tensors and a
`Dictionary`, so every method is measured the same way; `pipelines/evaluate.py` runs them and
stores the results."""
