"""Remote-write: every stored sample copied to Prometheus or a compatible TSDB."""
