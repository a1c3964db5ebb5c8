"""Fleet-level helpers shared by `make demo` and the e2e scenarios: traffic and views."""
