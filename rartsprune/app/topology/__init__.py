"""The app's side of topology search: the search job runner (`runner`), the evaluation-network training loop
(`train`) and plots (`reports`). The search itself is the core's `rartsprune.topology`.
"""
