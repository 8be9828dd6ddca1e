"""The adapter pattern's demo app: a Flask shop that logs like legacy software does, to two
files (an Apache-style access log with %D and a classic text application log with
multi-line tracebacks) and knows nothing about JSON, OpenTelemetry or Prometheus."""
