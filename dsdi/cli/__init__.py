"""The `dsdi` command line."""
