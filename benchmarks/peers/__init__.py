"""Peer servers for benchmarks/compare.py, each run from its own virtual environment.

Nothing here imports tensorgate: the modules run under the peers' interpreters
(.tools/peers/<name>/bin/python), with the repository root as the working directory.
"""
