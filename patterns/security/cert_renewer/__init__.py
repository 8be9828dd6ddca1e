"""cert-renewer: the security sidecar that keeps the pod's TLS key and certificate fresh. It
generates the key in the pod, has the issuer sign a short-lived certificate for the pod's
names, writes key and certificate as one atomic generation to a memory-backed volume the
tls-proxy reads, and renews at a fixed fraction of the lifetime."""
