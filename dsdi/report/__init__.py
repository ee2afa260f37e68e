"""Reports: the HTML report of a rank output and the paper's Table 2/3 tables."""
