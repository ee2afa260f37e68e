"""dsdi: disaster scene indexing in aerial video (TRECVID DSDI, Hitachi 2020 method)."""
