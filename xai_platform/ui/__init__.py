"""The Gradio app: one module per page, each with build(...) and plain handler functions."""
