"""Ranking: rank configuration, scoring clips with models, fusion, ensembles and model selection."""
