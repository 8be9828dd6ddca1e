"""The security sidecar: certificate renewal and TLS in front of a plain-HTTP app."""
