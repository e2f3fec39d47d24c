"""Names of the built-in models (kept apart from the channels so that reading them is cheap)."""

MODELS = ("attention", "linear", "phase-retrieval", "sign", "sign-product", "product", "link")
