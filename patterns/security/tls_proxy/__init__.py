"""The security lab's tls-proxy sidecar: it terminates TLS on the pod's port and relays
plain HTTP/1.1 to the app on 127.0.0.1, with the client's identity in headers it strips
from the request first; it picks up each renewed certificate for new connections."""
