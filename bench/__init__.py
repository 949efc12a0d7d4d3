"""``make bench``: the data path, the download and the local pipeline, measured (issue 8)."""
