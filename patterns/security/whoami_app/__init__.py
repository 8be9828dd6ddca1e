"""The security lab's app: it knows nothing about TLS and answers who the tls-proxy says
is calling (the identity headers the proxy sets after stripping the client's own)."""
