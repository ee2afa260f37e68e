"""Labels: the LADI class schema and soft/hard/majority labels from crowd answers (first stage)."""
