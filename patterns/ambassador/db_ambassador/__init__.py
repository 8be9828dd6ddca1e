"""db-ambassador: a PostgreSQL ambassador sidecar. The app connects to localhost:5432; the
ambassador health-checks the real servers, originates TLS to them, sends each new session
to the writable primary, and fails over when it dies."""
