"""The Gradio app: one module per page, each with build(...) and plain handler functions."""

from .gradio_import import skip_stub_writing

# Before any page module imports Gradio: about 1 s off every start-up (see gradio_import).
skip_stub_writing()
