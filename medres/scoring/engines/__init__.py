"""Scoring engines beyond Lightning's ranks: a Ray cluster (:mod:`medres.scoring.engines.ray`)."""
