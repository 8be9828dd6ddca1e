"""cert-issuer: the security lab's stand-in for the organisation's CA. It signs PKCS#10
requests, over HTTPS, from callers presenting the bootstrap token, for the names and at most
the lifetime it allows (as the log collector stands in for the logging backend)."""
