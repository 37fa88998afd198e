"""The Spark stages of a run: embed (with its preflight), reduce, classify, and the model store."""
