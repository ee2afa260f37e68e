"""TRECVID formats: submission XML, TREC runs, qrels, and average precision as trec_eval computes it."""
