"""Generating audio: the reference generators (naive, cached queue, streaming) and the fast paths."""
