"""log-adapter: reads a legacy app's log files from the pod's shared volume and re-exposes
them in standard shapes, OpenTelemetry JSON records (stdout or Forward) and Prometheus
metrics, without a line of the app changed."""
