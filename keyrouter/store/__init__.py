"""Processing state backends.  `open_store(url)` picks one from a URL (see SPEC, Store)."""
