"""Training data sets, one per file; import them from `hkdviz.train.data`."""
