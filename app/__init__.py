"""The workbench's Gradio app: dictionaries, feature pages, prompt inspection and steering.

Telemetry is switched off here, before anything in the package can import gradio or the
Hugging Face hub client (they read these variables at import), so nothing leaves the machine.
`app.serve` holds the CLI entry point (`ServeConfig`, `run`); `app.server.build_app` the Blocks.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
