"""The security sidecar: certificate renewal and TLS in front of an app that only speaks plain HTTP."""
