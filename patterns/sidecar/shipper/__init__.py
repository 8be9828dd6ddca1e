"""log-shipper: the sidecar that tails the app's log files and ships each line to a
Fluentd-compatible collector over the Forward protocol, at least once."""
