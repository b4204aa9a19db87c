"""Runs compiled steps: buffers, the fit/evaluate/predict loops, metrics and callbacks.
It imports neither the frontend nor the passes, so a compiled trainer runs without them."""
